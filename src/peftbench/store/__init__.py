"""The results store: one versioned JSON per run (runs.py), what identifies a run's experiment
(identity.py) and where and how it was made (provenance.py)."""

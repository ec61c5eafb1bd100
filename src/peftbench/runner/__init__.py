"""A grid, run by the grid process: building its config (build.py), planning its runs (planning.py), the
protocol of one run (protocol.py), and scheduling the runs on an executor while this process alone writes
the store (scheduling.py)."""

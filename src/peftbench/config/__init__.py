"""Configuration: typed sections (sections.py), the presets layered under the typed options (presets.py),
config files (files.py) and the one function that builds a grid from all of them (build.py)."""

"""peftbench: which parameter-efficient fine-tuning method should my text classifier use, and at what cost?

The Python API (see peftbench.api): grid, run_grid, load_results and the config classes."""

from typing import Any

__version__ = "0.1.0"

# Loaded on first use: `python -m peftbench.run.worker` and `peftbench --help` must not pay for torch here.
_EXPORTS = {
    "grid": "api",
    "load_results": "api",
    "run_grid": "api",
    "GridSummary": "api",
    "GridConfig": "config.sections",
    "DataConfig": "config.sections",
    "TrainConfig": "config.sections",
    "ScaleConfig": "config.sections",
    "UserError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'peftbench' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)

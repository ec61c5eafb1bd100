"""The Python API, for notebooks and scripts: build a grid the way the command line does, run it, read the
results back as a table. Every run still trains in a worker process of its own, so a notebook can run
grids one after another (any precision, any model) without resetting library state.

    from peftbench import grid, load_results, run_grid
    summary = run_grid(grid("e5-small-offline", "lora,bitfit", "results/nb", preset="tuned"))
    load_results("results/nb")   # a pandas DataFrame, one row per run
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.errors import UserError
from peftbench.reporting.tables import CSV_COLUMNS, csv_row
from peftbench.runner.build import build_grid as grid
from peftbench.runner.scheduling import GridSummary, run_grid
from peftbench.store.runs import ResultStore

__all__ = ["GridSummary", "grid", "load_results", "run_grid"]


def load_results(folder: str | Path) -> Any:
    """The runs of a results folder as a pandas DataFrame: the columns of results.csv, one row per run
    (failed runs included, with their status)."""
    import pandas as pd

    root = Path(folder)
    if not (root / "runs").is_dir() and not (root / "failed").is_dir():
        raise UserError(f"{root} holds no peftbench runs (no runs/ folder)")
    return pd.DataFrame(
        [csv_row(record) for record in ResultStore(root, read_only=True).records()], columns=CSV_COLUMNS
    )

"""The Python API, for notebooks and scripts: build a grid the way the command line does, run it, read the
results back as a table. Every run still trains in a worker process of its own, so a notebook can run
grids one after another (any precision, any model) without resetting library state.

    from peftbench import grid, load_results, run_grid
    summary = run_grid(grid("e5-small-offline", "lora,bitfit", "results/nb", preset="tuned"))
    load_results("results/nb")   # a pandas DataFrame, one row per run
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .config import PRESETS, DataConfig, GridConfig, ScaleConfig, TrainConfig, build_section
from .errors import UserError


def grid(
    model: str,
    methods: str | list[str],
    out: str | Path,
    preset: str = "seed",
    data: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    scale: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    **options: Any,
) -> GridConfig:
    """A GridConfig as `peftbench run` builds it: the preset's values, then the fields given (by their
    dataclass names: data={"max_train_samples": 512}, train={"epochs": 1}, scale={"workers": 2}).
    methods: names, or one comma-separated string ("seed", "all" and names, as --methods takes).
    options: GridConfig's other fields (dry_run, select_only)."""
    from .methods import parse_methods

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    names = parse_methods(methods if isinstance(methods, str) else ",".join(methods))
    return GridConfig(
        model=model, methods=names, out=Path(out), preset=preset, seeds=list(seeds or []),
        data=build_section(DataConfig, PRESETS[preset]["data"], _known(DataConfig, data, "data")),
        train=build_section(TrainConfig, PRESETS[preset]["train"], _known(TrainConfig, train, "train")),
        scale=ScaleConfig(**_known(ScaleConfig, scale, "scale")), **options,
    )  # fmt: skip


def _known(cls: type, values: dict[str, Any] | None, section: str) -> dict[str, Any]:
    """The values, or an error naming a key the section does not have (a typo must not be ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values or {}) - names)
    if unknown:
        raise UserError(f"{section} has no field {', '.join(map(repr, unknown))}; its fields: {', '.join(sorted(names))}")
    return dict(values or {})


def load_results(folder: str | Path) -> Any:
    """The runs of a results folder as a pandas DataFrame: the columns of results.csv, one row per run
    (failed runs included, with their status)."""
    import pandas as pd

    from .results import CSV_COLUMNS, ResultStore, csv_row

    root = Path(folder)
    if not (root / "runs").is_dir() and not (root / "failed").is_dir():
        raise UserError(f"{root} holds no peftbench runs (no runs/ folder)")
    return pd.DataFrame([csv_row(record) for record in ResultStore(root).records()], columns=CSV_COLUMNS)

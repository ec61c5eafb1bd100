"""The one way a grid is built, for `peftbench run`, its config files and the Python API alike: the dataclass
defaults, then the preset, then the values given, parsed once into the config's types."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peftbench.config.presets import PRESETS
from peftbench.config.sections import DataConfig, GridConfig, ScaleConfig, TrainConfig, output_folder
from peftbench.errors import UserError
from peftbench.methods import parse_methods


def build_grid(
    model: str,
    methods: str | Sequence[str],
    out: str | Path,
    preset: str = "seed",
    data: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    scale: dict[str, Any] | None = None,
    seeds: str | Sequence[int] | None = None,
    **options: Any,
) -> GridConfig:
    """A GridConfig: the preset's values, then the fields given (by their dataclass names:
    data={"max_train_samples": 512}, train={"epochs": 1}, scale={"workers": 2}).
    methods: names, or one comma-separated string ("seed", "all" and names, as --methods takes).
    seeds: integers, or one comma-separated string. options: GridConfig's other fields (dry_run,
    select_only, report_to)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    names = parse_methods(methods if isinstance(methods, str) else ",".join(methods))
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(GridConfig)})
    if unknown:
        raise UserError(f"a grid has no option {', '.join(map(repr, unknown))}")
    return GridConfig(
        model=model,
        methods=names,
        out=output_folder(out),  # before Path(): Path("") would be the working directory
        preset=preset,
        seeds=parse_seeds(seeds),
        data=section(DataConfig, PRESETS[preset]["data"], data, "data"),
        train=section(TrainConfig, PRESETS[preset]["train"], train, "train"),
        scale=section(ScaleConfig, {}, scale, "scale"),
        **options,
    )


def section(cls: type, preset_values: dict[str, Any], given: dict[str, Any] | None, name: str) -> Any:
    """One config section: defaults, then the preset, then the values given. A key the section does not have
    is an error naming it (a typo must not be ignored)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given or {}) - fields)
    if unknown:
        raise UserError(f"{name} has no field {', '.join(map(repr, unknown))}; its fields: {', '.join(sorted(fields))}")
    return cls(**{**{k: v for k, v in preset_values.items() if k in fields}, **(given or {})})


def parse_seeds(seeds: str | Sequence[int] | None) -> list[int]:
    """Seeds in order, without repeats; none given: [] (the one seed of train.seed)."""
    if seeds is None:
        return []
    if isinstance(seeds, str):
        try:
            seeds = [int(v) for v in seeds.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
        if not seeds:
            raise UserError("--seeds names no seed")
    return list(dict.fromkeys(seeds))

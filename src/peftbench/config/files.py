"""Config files for `peftbench run --config FILE` (YAML or JSON): every option of the command as a key.

A file's keys become command-line arguments placed before the ones typed, so they go through the very same
parser (types, choices, errors) and a flag typed on the command line wins over the file. Options a file
leaves out stay unset, so presets still fill them. Each grid writes its resolved options to DIR/config.yaml,
which builds the same grid again (same run fingerprints) with `peftbench run --config DIR/config.yaml`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from peftbench.config.sections import GridConfig, option_name
from peftbench.errors import UserError, first_line

WRITTEN_NAME = "config.yaml"
HEADER = (
    "# The resolved options of this grid. `peftbench run --config {path}` runs it again; options typed on the "
    "command line win.\n"
)


# A config file is a mapping of options to values and lists of values: a few kilobytes, two levels deep. The
# limits refuse, in one line, a file built to exhaust memory or the stack instead of configuring a grid.
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_DEPTH = 4


def read_options(path: Path) -> dict[str, Any]:
    """The file's mapping of option names to values; UserError for a missing, unparsable or non-mapping file."""
    import yaml

    try:
        if path.is_dir():
            raise UserError(f"--config {path} is a folder; give a YAML or JSON file")
        # read up to the limit, not by the size stat says: a pipe or /dev/zero has none, and never ends
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise UserError(f"--config {path} is larger than {MAX_CONFIG_BYTES:,} bytes; a config file is a few lines")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --config {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            _check_yaml_shape(text, path)
            values = yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot parse --config {path}: {first_line(exc)}") from None
    except RecursionError:
        raise UserError(f"--config {path} is nested deeper than a config file can be") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"--config {path} must hold a mapping of option names to values, not a {type(values).__name__}")
    return values


def _check_yaml_shape(text: str, path: Path) -> None:
    """Refuse aliases (each one can expand the document ninefold: a few hundred bytes reach gigabytes) and
    nesting past MAX_CONFIG_DEPTH, reading YAML's events, before anything is built from them."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise UserError(f"--config {path}: YAML aliases (*name) are not allowed in a config file")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise UserError(f"--config {path} is nested deeper than {MAX_CONFIG_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def as_arguments(values: dict[str, Any], parser: argparse.ArgumentParser, where: Path) -> list[str]:
    """Command-line arguments that say what the file says; an unknown key is an error naming it."""
    actions = {option: action for action in parser._actions for option in action.option_strings}
    arguments: list[str] = []
    for key, value in values.items():
        option = "--" + str(key).replace("_", "-")
        action = actions.get(option)
        if action is None or option in ("--config", "--help"):
            raise UserError(
                f"--config {where}: unknown key {key!r}; the keys are the options of `peftbench run` (see --help)"
            )
        if value is None:
            continue  # left unset, as when the option is not typed
        if action.nargs == 0:  # a flag such as --dry-run: on when true
            if not isinstance(value, bool):
                raise UserError(f"--config {where}: {key} must be true or false, got {value!r}")
            arguments += [option] if value else []
            continue
        arguments += [option, _as_text(value)]
    return arguments


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):  # methods: [lora, full], seeds: [0, 1, 2]
        return ",".join(map(str, value))
    return str(value)


# Fields left out of a written config file: which part of a grid one job ran is not part of the grid.
NOT_WRITTEN = ("shard",)


def grid_options(grid: GridConfig) -> dict[str, Any]:
    """The grid as `peftbench run` options (names without the leading --): what a config file holds, so
    that `peftbench run --config FILE` builds this very grid again. Unset values are left out."""
    options: dict[str, Any] = {
        "model": grid.model,
        "methods": ",".join(grid.methods),
        "preset": grid.preset,
        "out": str(grid.out),
        "dry-run": grid.dry_run,
        "select-only": grid.select_only,
        "report-to": ",".join(grid.report_to) or "none",
    }
    if grid.seeds:
        options["seeds"] = ",".join(map(str, grid.seeds))
    for section in (grid.data, grid.train, grid.scale):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is not None and f.name not in NOT_WRITTEN:
                options[option_name(f.name)] = list(value) if isinstance(value, tuple) else value
    return options


def render(grid: GridConfig, path: Path) -> str:
    """DIR/config.yaml's text: the options that build this grid again."""
    import yaml

    return HEADER.format(path=path) + yaml.safe_dump(grid_options(grid), sort_keys=False, allow_unicode=True)

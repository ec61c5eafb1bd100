"""The results store: one versioned JSON per run, written atomically, and the files derived from them.

DIR/runs/<method>__seed<seed>.json     finished runs (ok, collapsed, diverged) and dry runs
DIR/failed/<method>__seed<seed>.json   runs that raised; kept apart so they never mix into the tables
DIR/results.csv, DIR/report.md         rebuilt from the JSON files after every run
DIR/runs/corrupt/                      run files that could not be read (torn, edited, random bytes), moved
                                       aside with one line on stderr; the run counts as not done
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any


SCHEMA_VERSION = 2  # 2: model identity and data sha256 in config, execution in provenance
READABLE_SCHEMAS = (1, 2)  # a version-1 run is still read, shown and resumed (see protocol)
FINISHED_STATUSES = ("ok", "collapsed", "diverged")
CSV_COLUMNS = [
    "method", "seed", "status", "total_params", "trainable_params", "trainable_pct", "peak_memory_mb",
    "train_it_per_s", "eval_it_per_s", "train_samples_per_s", "train_time_min", "eval_loss", "eval_loss_sum",
    "accuracy", "f1_macro", "majority_accuracy",
    "adapter_size_mb", "total_time_min", "lr", "chosen_lr", "chosen_epoch", "dev_accuracy", "epochs", "train_examples", "eval_examples", "model", "note",
    "accuracy_ci_low", "accuracy_ci_high", "f1_macro_ci_low", "f1_macro_ci_high", "beats_majority",
]  # fmt: skip
# trials.csv: one row per learning rate tried and epoch, so an lr sweep can be read without the run files
TRIAL_COLUMNS = ["method", "seed", "lr", "epoch", "status", "train_loss", "dev_loss", "dev_accuracy", "dev_f1_macro", "chosen"]


def run_id(method: str, seed: int) -> str:
    return f"{method}__seed{seed}"


def protocol(config: dict[str, Any], data_sha256: str | None = None, train_cls: type | None = None) -> dict[str, Any]:
    """The experiment a run's config describes, and nothing else: method and its settings, learning rate(s),
    the training protocol, the split and the data's and model's identity.

    How it was executed (precision, batching, kernels: config.EXECUTION_FIELDS), the preset's name, where
    the data lies and package versions are not part of it. A field missing from an older run's config
    takes the field's default, so a field added later, with a default that does what older versions did,
    leaves older runs valid."""
    from .config import EXECUTION_FIELDS, DataConfig, TrainConfig

    def section(cls: type, stored: dict[str, Any], leave_out: tuple[str, ...]) -> dict[str, Any]:
        return {f.name: stored.get(f.name, f.default) for f in dataclasses.fields(cls) if f.name not in leave_out}

    data = config["data"]
    return {
        "model": config.get("model_identity") or {"name": config["model"]},
        "method": config["method"],
        "method_hyperparameters": config["method_hyperparameters"],
        "peft_config_class": config["peft_config_class"],
        "lr": config["lr"],
        # where the bytes lie and how they are decoded are not the experiment: the sha256 pins the bytes
        "data": {**section(DataConfig, data, ("source", "encoding")), "sha256": data.get("sha256", data_sha256)},
        "train": section(train_cls or TrainConfig, config["train"], EXECUTION_FIELDS),
        "select_only": config.get("select_only", False),  # a run that never read the test split is another kind
    }


def fingerprint(config: dict[str, Any]) -> str:
    """Short hash of protocol(config): two runs with the same fingerprint are the same experiment."""
    return hashlib.sha256(json.dumps(protocol(config), sort_keys=True).encode()).hexdigest()[:16]


def protocol_differences(record: dict[str, Any], planned: dict[str, Any], train_cls: type | None = None) -> list[str]:
    """What differs between a stored run's experiment and a planned one ("train.epochs: 2 → 3"); empty if none.

    A version-1 run named its model only by name: it is then compared by name."""
    stored = protocol(record["config"], record.get("data", {}).get("sha256"), train_cls)
    wanted = protocol(planned, None, train_cls)
    if "model_identity" not in record["config"]:
        wanted["model"] = {"name": planned["model"]}
    return [f"{key}: {stored_value!r} → {wanted_value!r}" for key, stored_value, wanted_value in _diff(stored, wanted)]


def _diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [(prefix.rstrip("."), old, new)]


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8")
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~_UMASK)  # temporary files are private; results are ordinary files
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


STALE_TEMPORARY_S = 600  # write_atomic holds its temporary file for milliseconds; older ones were orphaned


def make_ordinary(folder: Path) -> None:
    """Give a folder written through temporary files (private: 0600/0700) the modes of ordinary files under the
    user's umask, as the run JSONs have, so that the group's other tools can read saved weights."""
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def remove_stale_temporary_files(self) -> int:
        """Delete write_atomic's temporary files (`.<name>.<random>.tmp`) that a killed process left; only
        old ones, since another process sharing the folder may be writing one right now."""
        removed = 0
        for folder in (self.root, self.root / "runs", self.root / "failed"):
            for path in folder.glob(".*.tmp"):
                try:
                    if time.time() - path.stat().st_mtime > STALE_TEMPORARY_S:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass  # another process cleaned it meanwhile
        return removed

    def _path(self, folder: str, rid: str) -> Path:
        return self.root / folder / f"{rid}.json"

    def path_of(self, rid: str) -> Path:
        return self._path("runs", rid)

    def finished(self, rid: str) -> dict[str, Any] | None:
        """The finished record under this name, of whatever settings (the caller compares them), or None."""
        record = self._read(self._path("runs", rid))
        if record is None:
            return None  # absent or unreadable: run it (again)
        if record.get("schema_version") not in READABLE_SCHEMAS:
            return None
        return record if record.get("result", {}).get("status") in FINISHED_STATUSES else None

    def save(self, record: dict[str, Any]) -> Path:
        rid = record["run_id"]
        failed = record["result"]["status"] == "failed"
        path = self._path("failed" if failed else "runs", rid)
        write_atomic(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        if not failed:
            self._path("failed", rid).unlink(missing_ok=True)  # an earlier failure of this run is now superseded
        return path

    def records(self, include_failed: bool = True) -> list[dict[str, Any]]:
        found = []
        for folder in ("runs", "failed") if include_failed else ("runs",):
            for path in sorted((self.root / folder).glob("*.json")):
                record = self._read(path)
                if record is not None and record.get("schema_version") in READABLE_SCHEMAS:
                    found.append(record)
        return sorted(found, key=_display_order)

    def _read(self, path: Path) -> dict[str, Any] | None:
        """A run file's record; None when absent. One that cannot be a record is moved aside (so that it
        is said once, and the run is trained again), with one line on stderr."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw.decode("utf-8"))
            if isinstance(record, dict) and isinstance(record.get("result"), dict) and isinstance(record.get("config"), dict):
                return record
            why = f"not a run record but {json.dumps(record)[:20]}"
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            why = "empty" if not raw.strip() else f"not JSON ({type(exc).__name__} at byte {getattr(exc, 'start', getattr(exc, 'pos', 0))})"
        aside = path.parent / "corrupt" / path.name
        if aside.exists():
            aside = aside.with_name(f"{path.stem}.{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.json")
        try:
            aside.parent.mkdir(exist_ok=True)
            os.replace(path, aside)
            where = f"moved to {aside.relative_to(self.root)}"
        except OSError as exc:  # a read-only folder: say so, and leave the file
            where = f"left in place ({exc.strerror})"
        print(f"peftbench: warning: {path} is unreadable ({why}); {where}; the run counts as not done and a rerun "
              "trains it again", file=sys.stderr)  # fmt: skip
        return None

    def write_csv(self, records: list[dict[str, Any]]) -> Path:
        return self._write_table("results.csv", CSV_COLUMNS, [csv_row(r) for r in records])

    def write_trials_csv(self, records: list[dict[str, Any]]) -> Path | None:
        """trials.csv when some run tried several learning rates (or was --select-only); else None."""
        rows = [row for record in records for row in trial_rows(record)]
        if not rows:
            (self.root / "trials.csv").unlink(missing_ok=True)  # from an earlier state of the folder
            return None
        return self._write_table("trials.csv", TRIAL_COLUMNS, rows)

    def _write_table(self, name: str, columns: list[str], rows: list[dict[str, Any]]) -> Path:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        path = self.root / name
        write_atomic(path, buffer.getvalue())
        return path


def _display_order(record: dict[str, Any]) -> tuple:
    """Registry order (the reference's column order for its five), then seed; unknown methods last."""
    from .methods import REGISTRY

    method = record["config"]["method"]
    position = list(REGISTRY).index(method) if method in REGISTRY else len(REGISTRY)
    return (position, method, record["config"]["train"]["seed"])


def trial_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    from .report import display_name

    result = record["result"]
    chosen = (result.get("chosen_lr"), result.get("chosen_epoch"))
    return [
        {
            "method": display_name(record), "seed": record["config"]["train"]["seed"], "lr": trial["lr"],
            "epoch": epoch["epoch"], "status": trial["status"], "train_loss": epoch.get("train_loss"),
            "dev_loss": epoch["eval_loss"], "dev_accuracy": epoch["accuracy"], "dev_f1_macro": epoch["f1_macro"],
            "chosen": (trial["lr"], epoch["epoch"]) == chosen,
        }  # fmt: skip
        for trial in result.get("trials", [])
        for epoch in trial["epochs"]
    ]


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    from .report import display_name
    from .stats import run_intervals

    result = record["result"]
    row = {key: result.get(key) for key in CSV_COLUMNS}
    row.update(
        method=display_name(record),
        seed=record["config"]["train"]["seed"],
        lr=record["config"]["lr"],
        epochs=record["config"]["train"]["epochs"],
        model=record["config"]["model"],
        train_examples=record.get("data", {}).get("train_examples"),
        eval_examples=record.get("data", {}).get("eval_examples"),
        note=result.get("note") or result.get("error") or "",
    )
    intervals = run_intervals(record)
    for key in ("accuracy", "f1_macro"):
        low, high = intervals.get(f"{key}_ci", (None, None))
        row.update({f"{key}_ci_low": low, f"{key}_ci_high": high})
    row["beats_majority"] = intervals.get("beats_majority")
    return {k: ("" if v is None else v) for k, v in row.items()}


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(folder: Path) -> tuple[str | None, bool | None]:
    """The commit of the repository holding folder, and whether its tracked files differ from it (None, None
    outside a repository). Untracked files do not count: a run's own output folder inside the clone (`make
    demo` writes results/demo) would otherwise mark every run of a clean checkout as dirty."""
    commit = _git(folder, "rev-parse", "HEAD")
    if not commit:
        return None, None
    return commit, bool(_git(folder, "status", "--porcelain", "--untracked-files=no"))


def provenance(device: dict[str, Any], train: Any = None, scale: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where and how a run was made: command, versions, commit, the device with what `auto` resolved to there,
    and the execution (how the protocol was run; not part of the run's identity)."""
    from .config import EXECUTION_FIELDS

    versions = {}
    for package in ("peftbench", "torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit, dirty = git_state(Path(__file__).parent)
    described = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": commit,
        "git_dirty": dirty,
        "device": device,
    }
    if train is not None:
        described["execution"] = {**{name: getattr(train, name) for name in EXECUTION_FIELDS}, **(scale or {"workers": "process"})}
    return described

"""The results store: one versioned JSON per run, written atomically, and the files derived from them.

DIR/runs/<method>__seed<seed>.json     finished runs (ok, collapsed, diverged) and dry runs
DIR/failed/<method>__seed<seed>.json   runs that raised; kept apart so they never mix into the tables
DIR/results.csv, DIR/report.md         rebuilt from the JSON files after every run
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import UserError

SCHEMA_VERSION = 1
FINISHED_STATUSES = ("ok", "collapsed", "diverged")
CSV_COLUMNS = [
    "method", "seed", "status", "total_params", "trainable_params", "trainable_pct", "peak_memory_mb",
    "train_it_per_s", "eval_it_per_s", "train_samples_per_s", "train_time_min", "eval_loss", "eval_loss_sum",
    "accuracy", "f1_macro", "majority_accuracy",
    "adapter_size_mb", "total_time_min", "lr", "chosen_lr", "chosen_epoch", "dev_accuracy", "epochs", "train_examples", "eval_examples", "model", "note",
]  # fmt: skip


def run_id(method: str, seed: int) -> str:
    return f"{method}__seed{seed}"


def fingerprint(config: dict[str, Any]) -> str:
    """Identity of what a run was asked to do; two runs with the same fingerprint are the same experiment."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


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


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, folder: str, rid: str) -> Path:
        return self.root / folder / f"{rid}.json"

    def finished(self, rid: str, config_fingerprint: str) -> dict[str, Any] | None:
        """The finished record of this run, if there is one for this very configuration.

        A finished record of another configuration under the same name is an error: silently replacing
        it would lose a result, and skipping it would report numbers for settings that were not asked for.
        """
        path = self._path("runs", rid)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: run again (atomic writes make this rare)
        if record.get("result", {}).get("status") not in FINISHED_STATUSES:
            return None
        if record.get("config_fingerprint") != config_fingerprint:
            raise UserError(
                f"{path} holds a finished run of different settings; use another --out, or delete that file to run it again"
            )
        return record

    def has_finished(self, rid: str) -> bool:
        """Whether a finished run of any settings sits under this name (dry runs must not replace it)."""
        try:
            record = json.loads(self._path("runs", rid).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        return record.get("result", {}).get("status") in FINISHED_STATUSES

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
                try:
                    record = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    continue
                if record.get("schema_version") == SCHEMA_VERSION:
                    found.append(record)
        return sorted(found, key=_display_order)

    def write_csv(self, records: list[dict[str, Any]]) -> Path:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow(csv_row(record))
        path = self.root / "results.csv"
        write_atomic(path, buffer.getvalue())
        return path


def _display_order(record: dict[str, Any]) -> tuple:
    """Registry order (the reference's column order for its five), then seed; unknown methods last."""
    from .methods import REGISTRY

    method = record["config"]["method"]
    position = list(REGISTRY).index(method) if method in REGISTRY else len(REGISTRY)
    return (position, method, record["config"]["train"]["seed"])


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    from .report import display_name

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
    return {k: ("" if v is None else v) for k, v in row.items()}


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def provenance(device: dict[str, Any]) -> dict[str, Any]:
    versions = {}
    for package in ("peftbench", "torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit else None
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": commit,
        "git_dirty": bool(status) if commit else None,
        "device": device,
    }

"""The results store: one versioned JSON per run, written atomically; the grid process alone writes it.

DIR/runs/<method>__seed<seed>.json     finished runs (ok, collapsed, diverged) and dry runs
DIR/failed/<method>__seed<seed>.json   runs that raised; kept apart so they never mix into the tables
DIR/runs/corrupt/                      run files that could not be read (torn, edited, random bytes), moved
                                       aside with one line on stderr; the run counts as not done
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from peftbench.files import STALE_TEMPORARY_S, write_atomic
from peftbench.methods import REGISTRY
from peftbench.records import FINISHED, Status

SCHEMA_VERSION = 2  # 2: model identity and data sha256 in config, execution in provenance
READABLE_SCHEMAS = (1, 2)  # a version-1 run is still read, shown and resumed (see protocol)


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
        return record if record.get("result", {}).get("status") in FINISHED else None

    def save(self, record: dict[str, Any]) -> Path:
        rid = record["run_id"]
        failed = record["result"]["status"] == Status.FAILED
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
            if (
                isinstance(record, dict)
                and isinstance(record.get("result"), dict)
                and isinstance(record.get("config"), dict)
            ):
                return record
            why = f"not a run record but {json.dumps(record)[:20]}"
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            why = (
                "empty"
                if not raw.strip()
                else f"not JSON ({type(exc).__name__} at byte {getattr(exc, 'start', getattr(exc, 'pos', 0))})"
            )
        aside = path.parent / "corrupt" / path.name
        if aside.exists():
            aside = aside.with_name(f"{path.stem}.{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.json")
        try:
            aside.parent.mkdir(exist_ok=True)
            os.replace(path, aside)
            where = f"moved to {aside.relative_to(self.root)}"
        except OSError as exc:  # a read-only folder: say so, and leave the file
            where = f"left in place ({exc.strerror})"
        print(
            f"peftbench: warning: {path} is unreadable ({why}); {where}; the run counts as not done and a rerun "
            "trains it again",
            file=sys.stderr,
        )
        return None


def _display_order(record: dict[str, Any]) -> tuple:
    """Registry order (the reference's column order for its five), then seed; unknown methods last."""
    method = record["config"]["method"]
    position = list(REGISTRY).index(method) if method in REGISTRY else len(REGISTRY)
    return (position, method, record["config"]["train"]["seed"])

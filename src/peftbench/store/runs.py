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

from peftbench.errors import first_line
from peftbench.files import STALE_TEMPORARY_S, temporary_target, write_atomic
from peftbench.methods import REGISTRY
from peftbench.records import FINISHED, Status
from peftbench.store.schema import OtherVersion, RunRecord, SchemaError, read_record

# what a results folder holds beside runs/ and failed/ (reports, tables, the config it was run with): the only
# names whose temporary files the store sweeps there, since --out may be a folder shared with other files
FOLDER_FILES = ("results.csv", "trials.csv", "report.md", "report.html", "config.yaml")


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def remove_stale_temporary_files(self) -> int:
        """Delete write_atomic's temporary files (`.<name>.<random>.tmp`) of the store's own files that a killed
        process left; only old ones, since another process sharing the folder may be writing one right now.
        Nothing else is touched: not another program's `.draft.tmp`, not a file this user may not remove."""
        removed = 0
        for folder in (self.root, self.root / "runs", self.root / "failed"):
            for path in folder.glob(".*.tmp"):
                if not self._owns_temporary(folder, path.name):
                    continue
                try:
                    if path.is_file() and time.time() - path.lstat().st_mtime > STALE_TEMPORARY_S:
                        path.unlink()
                        removed += 1
                except OSError:
                    pass  # cleaned by another process meanwhile, or not ours to remove (a sticky shared folder)
        return removed

    def _owns_temporary(self, folder: Path, name: str) -> bool:
        target = temporary_target(name)
        if target is None:
            return False
        return target in FOLDER_FILES if folder == self.root else target.endswith(".json")

    def _path(self, folder: str, rid: str) -> Path:
        return self.root / folder / f"{rid}.json"

    def path_of(self, rid: str) -> Path:
        return self._path("runs", rid)

    def finished(self, rid: str) -> RunRecord | None:
        """The finished record under this name, of whatever settings (the caller compares them), or None."""
        record = self._read(self._path("runs", rid))
        if record is None:
            return None  # absent or unreadable: run it (again)
        return record if record.status in FINISHED else None

    def save(self, record: RunRecord) -> Path:
        rid = record.run_id
        failed = record.status == Status.FAILED
        path = self._path("failed" if failed else "runs", rid)
        write_atomic(path, json.dumps(record.to_dict(), indent=2, ensure_ascii=False) + "\n")
        if not failed:
            self._path("failed", rid).unlink(missing_ok=True)  # an earlier failure of this run is now superseded
        return path

    def records(self, include_failed: bool = True) -> list[RunRecord]:
        found = []
        for folder in ("runs", "failed") if include_failed else ("runs",):
            for path in sorted((self.root / folder).glob("*.json")):
                record = self._read(path)
                if record is not None:
                    found.append(record)
        return sorted(found, key=_display_order)

    def _read(self, path: Path) -> RunRecord | None:
        """A run file's record; None when absent or of a schema version this peftbench does not read. One that
        cannot be a record is moved aside (so that it is said once, and the run is trained again), with one
        line on stderr."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return read_record(json.loads(raw.decode("utf-8")))
        except OtherVersion:
            return None
        except SchemaError as exc:
            why = f"not a run record: {exc}"
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            why = (
                "empty"
                if not raw.strip()
                else f"not JSON ({type(exc).__name__} at byte {getattr(exc, 'start', getattr(exc, 'pos', 0))})"
            )
        except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, nesting past the limit
            why = f"not JSON that can be read ({type(exc).__name__}: {first_line(exc)[:80]})"
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


def _display_order(record: RunRecord) -> tuple[int, str, int]:
    """Registry order (the reference's column order for its five), then seed; unknown methods last."""
    method = record.method
    position = list(REGISTRY).index(method) if method in REGISTRY else len(REGISTRY)
    return (position, method, record.config.seed)

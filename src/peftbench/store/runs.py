"""The results store: one versioned JSON per run, written atomically; the grid process alone writes it.

DIR/runs/<method>__seed<seed>.json     finished runs (ok, collapsed, diverged) and dry runs
DIR/failed/<method>__seed<seed>.json   runs that raised; kept apart so they never mix into the tables
DIR/runs/corrupt/                      run files that could not be read (torn, edited, random bytes), moved
                                       aside with one line on stderr; the run counts as not done
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from peftbench.errors import first_line
from peftbench.files import STALE_TEMPORARY_S, make_ordinary, temporary_target, write_atomic
from peftbench.methods import REGISTRY
from peftbench.records import FINISHED, Status
from peftbench.store.schema import OtherVersion, RunRecord, SchemaError, read_record

# what a results folder holds beside runs/ and failed/ (reports, tables, the config it was run with): the only
# names whose temporary files the store sweeps there, since --out may be a folder shared with other files
FOLDER_FILES = ("results.csv", "trials.csv", "classes.csv", "report.md", "report.html", "config.yaml")


class ResultStore:
    def __init__(self, root: Path, read_only: bool = False) -> None:
        """read_only: a store that only reads (`peftbench report`, `compare`, the Python API): it moves
        nothing, not even a run file it cannot read."""
        self.root = root
        self.read_only = read_only

    def own_paths(self, rids: list[str]) -> list[Path]:
        """The folders this store writes into or replaces, for these runs: none may be a symbolic link (the
        records or weights would land outside the folder named)."""
        folders = [self.root / "runs", self.root / "failed"]
        return [*folders, *(folder / "corrupt" for folder in folders), *(self.root / rid for rid in rids)]

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

    def place_weights(self, staged: Path, rid: str) -> Path:
        """Move a run's finished weights folder into DIR/<run_id> whole: a reader never sees a half-written
        folder, and an earlier folder of that name is moved aside by a rename before the new one takes its
        place (no moment without one, no error if another process removed it meanwhile), then deleted."""
        final = self.root / rid
        make_ordinary(staged)
        replaced = None
        if final.exists():
            replaced = final.with_name(f".replaced-{rid}-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(final, replaced)
            except FileNotFoundError:
                replaced = None  # gone meanwhile
        os.rename(staged, final)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        return final

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
        cannot be a record is said in one line on stderr and counts as not done; a store that runs moves it
        aside (so that it is said once, and the run is trained again), a read-only one leaves it."""
        try:
            if path.is_symlink():
                raise _Unreadable("a symbolic link, not a run file")
            return read_record(_parsed(path.read_bytes()))
        except FileNotFoundError:
            return None
        except OtherVersion:
            return None
        except _Unreadable as exc:
            why = str(exc)
        except OSError as exc:  # a folder under a run file's name, a file this user may not read
            why = f"cannot be read: {exc.strerror}"
        except SchemaError as exc:
            why = f"not a run record: {exc}"
        where, then = self._set_aside(path)
        print(
            f"peftbench: warning: {path} is unreadable ({why}); {where}; the run counts as not done{then}",
            file=sys.stderr,
        )
        return None

    def _set_aside(self, path: Path) -> tuple[str, str]:
        """Move an unreadable run file into corrupt/ beside it: only by `peftbench run`, only inside the store's
        own folders (never through a symbolic link to a folder elsewhere). Says where it is now."""
        if self.read_only:
            return "left in place (reports only read)", ""
        if path.parent.is_symlink() or path.parent.parent.resolve() != self.root.resolve():
            return "left in place (its folder is a symbolic link)", ""
        aside = path.parent / "corrupt" / path.name
        if aside.exists() or aside.is_symlink():
            aside = aside.with_name(f"{path.stem}.{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.json")
        try:
            if aside.parent.is_symlink():
                raise OSError(errno.ELOOP, "corrupt/ is a symbolic link")
            aside.parent.mkdir(exist_ok=True)
            os.replace(path, aside)  # a symbolic link is moved itself, never what it points to
        except OSError as exc:  # a read-only folder: say so, and leave the file
            return f"left in place ({exc.strerror})", " and a rerun trains it again"
        return f"moved to {aside.relative_to(self.root)}", " and a rerun trains it again"


class _Unreadable(Exception):
    """Why a run file is not one, said before anything reads it."""


def _parsed(raw: bytes) -> object:
    """The JSON of a run file; SchemaError, one line, when it is none that can be read."""
    if not raw.strip():
        raise SchemaError("empty")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = getattr(exc, "start", getattr(exc, "pos", 0))
        raise SchemaError(f"not JSON ({type(exc).__name__} at byte {where})") from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, nesting past the limit
        raise SchemaError(f"not JSON that can be read ({type(exc).__name__}: {first_line(exc)[:80]})") from None


def _display_order(record: RunRecord) -> tuple[int, str, int]:
    """Registry order (the reference's column order for its five), then seed; unknown methods last."""
    method = record.method
    position = list(REGISTRY).index(method) if method in REGISTRY else len(REGISTRY)
    return (position, method, record.config.seed)

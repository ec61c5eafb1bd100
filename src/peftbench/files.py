"""Files written so that a reader never sees half of one, with the modes of ordinary files."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8"
    )
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


# write_atomic holds its temporary file for milliseconds; older ones were orphaned by a killed process
STALE_TEMPORARY_S = 600
# write_atomic's temporary name for <name>: ".<name>." + tempfile's 8 random characters + ".tmp"
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def temporary_target(file_name: str) -> str | None:
    """The file that a temporary file of write_atomic was to become, or None for a name it never writes."""
    found = _TEMPORARY.fullmatch(file_name)
    return found["name"] if found else None


def make_ordinary(folder: Path) -> None:
    """Give a folder written through temporary files (private: 0600/0700) the modes of ordinary files under the
    user's umask, as the run JSONs have, so that the group's other tools can read saved weights."""
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)

"""The cache of converted models: a model that ships in a form of its own (e5's 4-bit file, a GGUF file) is
converted once into a standard Hugging Face folder under cache_root(), shared between virtual environments,
and rebuilt only when its source file or its converter changes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peftbench.errors import UserError

CACHE_ENV = "PEFTBENCH_CACHE_DIR"
MARKER = "peftbench-conversion.json"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "peftbench")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def same_conversion(found: dict[str, Any], expected: dict[str, Any]) -> bool:
    return all(found.get(key) == expected[key] for key in ("source_sha256", "converter_version"))


def ensure_folder(
    source: Path, name: str, convert: Callable[[Path, Path], None], version: int, cache: Path | None = None
) -> Path:
    """The folder `name` converted from `source`, converting on first use; a folder from another file or converter
    is rebuilt. The file's path is recorded but not compared: the same wheel in two virtual environments (a fresh
    clone's .venv and one's own) shares one conversion instead of replacing it under the other's running jobs.
    Processes converting at once take turns (a lock file beside the folder): the first converts, the others find
    its folder done."""
    from filelock import FileLock

    folder = (cache or cache_root()) / name
    expected = {"source": str(source), "source_sha256": _sha256(source), "converter_version": version}
    if _converted(folder, expected):
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder.parent / f".{name}.lock")):
            if not _converted(folder, expected):  # another process may have converted it while this one waited
                _convert_into(source, folder, expected, convert)
    except OSError as exc:
        raise UserError(
            f"cannot write the converted model under {folder.parent}: {exc.strerror}; set {CACHE_ENV}"
        ) from None
    return folder


def _converted(folder: Path, expected: dict[str, Any]) -> bool:
    marker = folder / MARKER
    return marker.exists() and same_conversion(json.loads(marker.read_text(encoding="utf-8")), expected)


def _convert_into(source: Path, folder: Path, expected: dict[str, Any], convert: Callable[[Path, Path], None]) -> None:
    """Convert into a staging folder beside `folder`, then put it in place: the marker appears together with
    the complete folder, never before."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-convert-", dir=folder.parent))
    try:
        convert(source, staging)
        (staging / MARKER).write_text(json.dumps(expected, indent=2), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

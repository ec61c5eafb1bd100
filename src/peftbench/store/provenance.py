"""Where and how a run was made: the command, package versions, the commit and the device."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from peftbench.config.sections import EXECUTION_FIELDS
from peftbench.store.schema import Device, Provenance


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


def provenance(device: Device | None, train: Any = None, scale: dict[str, Any] | None = None) -> Provenance:
    """Where and how a run was made: command, versions, commit, the device with what `auto` resolved to there,
    and the execution (how the protocol was run; not part of the run's identity)."""
    versions: dict[str, str | None] = {}
    for package in (
        "peftbench",
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "datasets",
        "tokenizers",
        "safetensors",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None  # not installed
    commit, dirty = git_state(Path(__file__).parent)
    execution = None
    if train is not None:
        execution = {**{name: getattr(train, name) for name in EXECUTION_FIELDS}, **(scale or {"workers": "process"})}
    return Provenance(
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=[Path(sys.argv[0]).name, *sys.argv[1:]],
        python=platform.python_version(),
        platform=platform.platform(),
        packages=versions,
        git_commit=commit,
        git_dirty=dirty,
        device=device,
        execution=execution,
    )

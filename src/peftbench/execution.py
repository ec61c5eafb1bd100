"""Where a worker request runs: in a child process of its own (the default) or in this process (`--workers
inline`, for a debugger; its peak memory then includes what earlier runs left behind)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

STOP_GRACE_S = 10  # after Ctrl-C, how long a worker may take to stop before it is killed


def run_request(request: dict[str, Any], folder: Path, inline: bool = False) -> dict[str, Any]:
    """The worker's response; a worker that dies comes back as {"error": why} and never raises."""
    if inline:
        return _in_this_process(request)
    return _in_child_process(request, folder)


def _in_this_process(request: dict[str, Any]) -> dict[str, Any]:
    from accelerate.state import AcceleratorState

    from .worker import work

    # accelerate keeps one process-wide state whose precision cannot change; a child process starts afresh,
    # here each request must.
    AcceleratorState._reset_state()
    return work(request)


def _child_environment() -> dict[str, str]:
    """The child imports the very peftbench this process runs (a source checkout as well as an install)."""
    package_root = str(Path(__file__).resolve().parents[1])
    paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _in_child_process(request: dict[str, Any], folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    request_path, response_path = folder / "request.json", folder / "response.json"
    request_path.write_text(json.dumps(request), encoding="utf-8")
    response_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "peftbench.worker", str(request_path), str(response_path)]
    child = subprocess.Popen(command, env=_child_environment())
    try:
        code = child.wait()
    except BaseException:  # Ctrl-C (which the child got too) or anything else: never leave it running
        _stop(child)
        raise
    if code == 0 and response_path.exists():
        return json.loads(response_path.read_text(encoding="utf-8"))
    if code < 0:
        return {"error": f"worker process killed by {signal.Signals(-code).name}", "worker_died": True}
    return {"error": f"worker process exited with code {code} before writing its result", "worker_died": True}


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()

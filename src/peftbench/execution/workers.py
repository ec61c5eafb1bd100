"""Where a worker request runs: in a child process of its own (the default), forked from a warm process that
has already imported the heavy libraries (execution/warm.py; `--warm-start off`: a fresh interpreter), in
several child processes that train one run data-parallel (`--num-processes N`, launched with torchrun, which
is what `accelerate launch` runs on several GPUs; accelerate inside the worker reads the ranks it sets; each
rank a fresh interpreter), or in this process (`--workers inline`, for a debugger; its peak memory then
includes what earlier runs left behind)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peftbench
from peftbench.execution import warm
from peftbench.run.messages import WorkRequest, WorkResponse

STOP_GRACE_S = 10  # after Ctrl-C, how long a worker may take to stop before it is killed
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _Starting:
    """A worker not yet started (its warm process may still be importing, for seconds): a grid stopped
    meanwhile marks it and kills that warm process (whose imports it would otherwise wait for), and the worker
    is stopped as soon as it has a pid."""

    def __init__(self, process: warm.WarmProcess | None) -> None:
        self.process = process
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self.process is not None:
            self.process.popen.kill()


Child = subprocess.Popen | warm.WarmChild  # a worker process as the grid holds it
# worker processes under way, so that a cancelled grid can stop them
_live: set[Child | _Starting] = set()
_live_guard = threading.Lock()


def run_request(
    request: WorkRequest,
    folder: Path,
    inline: bool = False,
    env: dict[str, str] | None = None,
    processes: int = 1,
    warm_start: bool = True,
) -> WorkResponse:
    """The worker's response; a worker that dies comes back as a response that says why, and never raises.
    env: extra environment of the worker (its GPUs, its CPU threads); processes: data-parallel processes;
    warm_start: fork it from a warm process where one can serve it (one process, Linux)."""
    if inline:
        return _in_this_process(request)
    return _in_child_process(request, folder, env or {}, processes, warm_start)


def stop_all_workers() -> None:
    """Stop every worker process this process started (a grid cancelled by Ctrl-C or SIGTERM)."""
    with _live_guard:
        children = list(_live)
        for child in children:
            if isinstance(child, _Starting):
                child.stop()
    for child in children:
        if not isinstance(child, _Starting):
            _stop(child)


def _in_this_process(request: WorkRequest) -> WorkResponse:
    from accelerate.state import AcceleratorState

    from peftbench.run.worker import work

    # accelerate keeps one process-wide state whose precision cannot change; a child process starts afresh,
    # here each request must.
    AcceleratorState._reset_state()
    return work(request)


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """The child imports the very peftbench this process runs (a source checkout as well as an install), and
    nothing from the folder it was started in: PYTHONSAFEPATH keeps `python -m` from putting the working
    directory first on sys.path (Python 3.11+; on 3.10 the child's working directory is its own scratch
    folder, which holds no code)."""
    package_root = str(Path(peftbench.__file__).resolve().parents[1])  # the folder holding peftbench/
    paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "PYTHONSAFEPATH": "1"}


def _parent_death_signal() -> Any:
    """Linux's prctl, looked up before any fork: what runs between fork and exec must not load libraries."""
    if sys.platform != "linux":
        return None  # elsewhere an orphaned worker finishes on its own; nobody records it
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    # The worker is killed when the thread that started it ends (a grid or a Ray worker killed with -9),
    # so no orphan goes on training a run that nobody will record.
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


_DIE_WITH_PARENT = _parent_death_signal()


def die_with_parent(parent: int) -> None:
    """In a forked worker: be killed when the process that forked it ends, and end now if it already has."""
    if _DIE_WITH_PARENT is not None:
        _DIE_WITH_PARENT()
    if os.getppid() != parent:
        os._exit(1)


def _command(request_path: Path, response_path: Path, processes: int) -> list[str]:
    worker = ["-m", "peftbench.run.worker", str(request_path), str(response_path)]
    if processes == 1:
        return [sys.executable, *worker]
    # torchrun sets RANK/WORLD_SIZE/MASTER_PORT for each process; --standalone picks a free port on this machine
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "--no-python"]
    return [sys.executable, *launcher, sys.executable, *worker]


def _in_child_process(
    request: WorkRequest, folder: Path, env: dict[str, str], processes: int, warm_start: bool
) -> WorkResponse:
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    request_path, response_path = folder / "request.json", folder / "response.json"
    request_path.write_text(request.to_json(), encoding="utf-8")
    response_path.unlink(missing_ok=True)
    full_env = child_environment(env)
    # each data-parallel rank is torchrun's to start
    process = warm.take(full_env) if warm_start and processes == 1 and warm.available() else None
    try:
        start = functools.partial(_started, process, request_path, response_path, folder, full_env, processes)
        child, started = _registered(start, process)
        try:
            code = child.wait()
        except BaseException:  # Ctrl-C, SIGTERM or anything else: never leave it running
            _stop(child)
            raise
        finally:
            with _live_guard:
                _live.discard(child)
    finally:
        if process is not None:
            warm.give_back(process)
    response = _response(code, response_path)
    response.worker_start = started
    return response


def _registered(start: Callable[[], tuple[Child, str]], process: warm.WarmProcess | None) -> tuple[Child, str]:
    """The worker that start() starts (forked by process, if any), known to stop_all_workers; stopped at once
    if the grid was stopped while it started (a warm process's first worker waits for its imports)."""
    starting = _Starting(process)
    with _live_guard:
        _live.add(starting)
    try:
        child, started = start()
    except BaseException:
        with _live_guard:
            _live.discard(starting)
        raise
    with _live_guard:  # in one step: a grid's stop sees one of the two
        _live.discard(starting)
        _live.add(child)
        stopped = starting.stopped
    if stopped:
        _stop(child)
    return child, started


def _started(
    process: warm.WarmProcess | None,
    request_path: Path,
    response_path: Path,
    folder: Path,
    env: dict[str, str],
    processes: int,
) -> tuple[Child, str]:
    """The worker process: forked by the warm process when there is one that can, else a fresh interpreter;
    and how it started ("warm", or "cold" with why where warm start was asked for)."""
    why = ""
    if process is not None:
        forked = process.start(warm.Order([str(request_path), str(response_path)], str(folder), env))
        if isinstance(forked, warm.WarmChild):
            return forked, "warm"
        why = f": {forked}"
    # A process group of its own: a terminal's Ctrl-C reaches the grid process alone, which stops its workers
    # (a worker hit while still importing would print a traceback), and _stop reaches torchrun's ranks too.
    # Its working directory is its own folder: a json.py or torch.py where the user typed the command never runs.
    command = _command(request_path, response_path, processes)
    child = subprocess.Popen(command, cwd=folder, env=env, preexec_fn=_DIE_WITH_PARENT, start_new_session=True)
    return child, f"cold{why}"


def _response(code: int, response_path: Path) -> WorkResponse:
    if code == 0 and response_path.exists():
        return WorkResponse.from_json(response_path.read_text(encoding="utf-8"))
    if code < 0:
        return WorkResponse.died(f"worker process killed by {signal.Signals(-code).name}")
    return WorkResponse.died(f"worker process exited with code {code} before writing its result")


def _stop(child: Child) -> None:
    if child.poll() is not None:
        return
    signal_group(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        signal_group(child.pid, signal.SIGKILL)
        child.wait()


def signal_group(pid: int, signum: int) -> None:
    """Signal the worker and, under --num-processes, every rank torchrun started: its process group; a forked
    worker that has not yet made its own group, alone."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass  # gone meanwhile

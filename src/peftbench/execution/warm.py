"""Warm start: a run's worker process forked from one that has already imported torch, transformers, peft and
scikit-learn, instead of a fresh interpreter importing them again (5 to 9 s a worker on a 2-core CPU, most
of what a small run costs).

A *warm process* (`python -m peftbench.execution.warm`) is started for one environment (a slot's threads,
cores or GPUs), imports the libraries, and then, for each worker asked of it, forks a child that becomes
that worker: a process of its own, in a session of its own, its memory measured from its own start, killed
with the warm process when that goes. So what a cold worker guaranteed still holds: a crash or a kill -9
costs that run alone, and Ctrl-C and the grid's stop reach it through its process group.

Fork safety (torch's rules): the warm process only imports; it computes nothing (no OpenMP thread pool, no
CUDA context). Before each fork it checks that no thread runs but its own and jemalloc's background threads
(pyarrow's allocator, imported by pandas; jemalloc's fork handlers stop and restart them) and that CUDA is
not initialised; if either fails the worker starts cold and its record says why. Linux only (fork,
PR_SET_PDEATHSIG); elsewhere every worker starts cold.

The grid process keeps warm processes for its whole life, one per environment (a few idle at most), so
that later grids of the same process (the API, the tests) start warm too; each ends when the grid process
closes its socket or dies.
"""

from __future__ import annotations

import atexit
import errno
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection, wait
from pathlib import Path

# What every worker imports before it trains: imported once here instead (the modules run/worker.py and
# the code it calls import inside functions included).
PRELOAD = (
    "peftbench.run.worker",
    "accelerate",
    "peft",
    "safetensors.torch",
    "sklearn.metrics",
    "transformers.modeling_utils",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
)
# Variables that change from call to call and that no library reads when imported: a warm process started
# with another value of them serves a worker as well (each worker gets its exact environment all the same).
NOT_READ_AT_IMPORT = ("PYTEST_CURRENT_TEST",)
# Set by scikit-learn's __init__ (os.environ.setdefault) in every process that imports it: a worker's
# environment taken after the grid process imported it holds them, a warm process started before gets them too.
SET_ON_IMPORT = {"KMP_DUPLICATE_LIB_OK": "True", "KMP_INIT_AT_FORK": "FALSE"}
OUTPUTS = (1, 2)  # stdout, stderr: sent with each order, so that a worker writes where a cold one would
NAME = "peftbench-worker"
MAX_IDLE = 4  # warm processes kept idle at most (each holds the imported libraries, ~0.5 GB)
ALLOWED_THREADS = ("jemalloc_bg_thd",)  # threads whose library makes fork safe itself
# numpy's and scipy's OpenBLAS start a pool of threads (one per core beyond the first) as soon as they are
# loaded; the warm process loads them with none, and each worker gets the count a cold one would take from
# its environment (_blas_threads_as_cold). torch computes with MKL and OpenMP, whose pools start on first use.
WARM_ONLY = {"OPENBLAS_NUM_THREADS": "1"}
BLAS_THREADS_ENV = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")  # what OpenBLAS reads, in order


@dataclass
class Order:
    """What the warm process is asked: become a worker with these arguments, here, with this environment."""

    argv: list[str]
    cwd: str
    env: dict[str, str]


def available() -> bool:
    """Whether workers can start warm here: fork and a parent-death signal (Linux)."""
    return sys.platform == "linux" and hasattr(os, "fork")


class WarmChild:
    """A worker forked by a warm process, as the grid sees it: what subprocess.Popen offers (pid, poll, wait),
    its exit status reported by the warm process that forked it."""

    def __init__(self, process: WarmProcess, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._process = process

    def poll(self) -> int | None:
        if self.returncode is None and self._process.reading.acquire(blocking=False):
            try:
                self._read(0)
            finally:
                self._process.reading.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status: negative for the signal that ended it, as subprocess gives it."""
        if not self._process.reading.acquire(timeout=-1 if timeout is None else timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        try:
            if not self._read(timeout):
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        finally:
            self._process.reading.release()
        assert self.returncode is not None
        return self.returncode

    def _read(self, timeout: float | None) -> bool:
        if self.returncode is not None:
            return True
        channel = self._process.channel
        try:
            if not channel.poll(timeout):
                return False
            kind, value = channel.recv()
        except (EOFError, OSError):  # the warm process died, and its worker with it (parent-death signal)
            kind, value = "exit", -signal.SIGKILL
        assert kind == "exit", kind
        self.returncode = value
        return True


class WarmProcess:
    """The grid's end of one warm process: a socket pair, one worker at a time."""

    def __init__(self, env: dict[str, str], key: frozenset[tuple[str, str]]) -> None:
        self.key = key
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])  # holds peftbench/: no stray json.py or torch.py
        command = [sys.executable, "-m", "peftbench.execution.warm", str(theirs.fileno())]
        with theirs:
            self.popen = subprocess.Popen(
                command, env={**env, **WARM_ONLY}, cwd=root, pass_fds=(theirs.fileno(),), start_new_session=True
            )
        self.channel = Connection(ours.detach())
        self.reading = threading.Lock()  # one reader of the channel at a time

    def start(self, order: Order) -> WarmChild | str:
        """The forked worker, or why it must start cold instead. It writes where this process's stdout and
        stderr go now, as a worker started by subprocess would."""
        with self.reading:
            try:
                self.channel.send(order)
                for fd in OUTPUTS:
                    reduction.send_handle(self.channel, fd, self.popen.pid)
                kind, value = self.channel.recv()  # the first one waits for the imports
            except (EOFError, OSError) as exc:
                return f"the warm process ended or cannot be reached ({exc or self.popen.poll()})"
        return WarmChild(self, value) if kind == "pid" else value

    def alive(self) -> bool:
        return self.popen.poll() is None

    def close(self) -> None:
        """End an idle warm process: it holds no worker and nothing to save, and may still be importing
        (a prestarted one at the end of a grid that had nothing left to run), so it is not waited for."""
        if not self.channel.closed:
            self.channel.close()
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


_idle: OrderedDict[frozenset[tuple[str, str]], list[WarmProcess]] = OrderedDict()
_idle_guard = threading.Lock()


def _key(env: dict[str, str]) -> frozenset[tuple[str, str]]:
    """What a warm process started with env is to a worker: the variables read at import, as the imports
    leave them (a process that has imported scikit-learn has its defaults, as the warm process has)."""
    after_imports = {**SET_ON_IMPORT, **env}
    return frozenset((k, v) for k, v in after_imports.items() if k not in NOT_READ_AT_IMPORT)


def take(env: dict[str, str]) -> WarmProcess:
    """An idle warm process started with this environment, or a new one (its imports then under way)."""
    key = _key(env)
    with _idle_guard:
        while _idle.get(key):
            process = _idle[key].pop()
            if process.alive():
                return process
            process.close()
    return WarmProcess(env, key)


def give_back(process: WarmProcess) -> None:
    """Keep it for the next worker with its environment; the longest idle beyond MAX_IDLE are closed."""
    if not process.alive():
        process.close()
        return
    closing = []
    with _idle_guard:
        _idle.setdefault(process.key, []).append(process)
        _idle.move_to_end(process.key)
        while sum(map(len, _idle.values())) > MAX_IDLE:
            oldest = next(k for k, v in _idle.items() if v)
            closing.append(_idle[oldest].pop(0))
            if not _idle[oldest]:
                del _idle[oldest]
    for stale in closing:
        stale.close()


def prestart(env: dict[str, str]) -> None:
    """Start a warm process for this environment now, idle until a worker with it is asked for; none when
    one is idle already (an earlier grid of this process left it)."""
    key = _key(env)
    with _idle_guard:
        if _idle.get(key):
            return
    give_back(WarmProcess(env, key))


def close_all() -> None:
    """End the idle warm processes (at exit)."""
    with _idle_guard:
        processes = [p for ps in _idle.values() for p in ps]
        _idle.clear()
    for process in processes:
        process.close()


atexit.register(close_all)


# The warm process itself.


def fork_unsafe() -> str | None:
    """Why forking this process now would not be safe, or None."""
    try:
        names = [Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")]
    except OSError:
        return "its threads cannot be read (/proc)"
    others = [name for name in names if name not in ALLOWED_THREADS]
    if len(others) > 1:  # one of them is this thread
        return f"threads besides its own: {', '.join(sorted(others))}"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA was initialised"
    return None


def mapped_file_pages() -> list[tuple[int, int]]:
    """(address, length) of the runs of file-backed pages this process has mapped now: the code and read-only
    data of the libraries that its imports touched.

    Fork copies a process's page tables except where a fault can fill them in again: file-backed pages that
    were never written, such as a library's code. A forked child starts without them in its resident set and
    maps them again as it runs, so the growth of its resident set (the run's peak memory, run/measure.py)
    would count tens of MB of library code that a cold worker, which imported the same libraries, already
    had at start. The child maps these runs again before it measures (_map_again)."""
    import numpy as np

    page = os.sysconf("SC_PAGE_SIZE")
    found: list[tuple[int, int]] = []
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split()
            if len(fields) < 6 or not fields[5].startswith("/") or not fields[1].startswith("r"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            pagemap.seek(start // page * 8)
            present = (np.frombuffer(pagemap.read((end - start) // page * 8), dtype=np.uint64) >> 63).astype(np.int8)
            edges = np.flatnonzero(np.diff(np.concatenate(([0], present, [0]))))  # where runs begin and end
            found += [(start + int(a) * page, int(b - a) * page) for a, b in zip(edges[::2], edges[1::2])]
    return found


MADV_POPULATE_READ = 22  # linux/mman.h, Linux 5.14+: map the pages in, as reading them would


def _map_again(runs: list[tuple[int, int]]) -> None:
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for address, length in runs:
        if madvise(address, length, MADV_POPULATE_READ) != 0 and ctypes.get_errno() == errno.EINVAL:
            return  # a kernel before 5.14: the run's peak then includes the library code it maps again


def _blas_threads_as_cold() -> None:
    """OpenBLAS's thread count as a cold worker's OpenBLAS takes it when loaded: OPENBLAS_NUM_THREADS, else
    GOTO_NUM_THREADS, else OMP_NUM_THREADS, else one per core it may run on (its cores are set later, as a cold
    worker's are set after its OpenBLAS has loaded)."""
    from threadpoolctl import threadpool_limits

    given = next((os.environ[name] for name in BLAS_THREADS_ENV if os.environ.get(name, "").isdigit()), None)
    threadpool_limits(int(given) if given else len(os.sched_getaffinity(0)), user_api="blas")


def _become_worker(order: Order, channel: int, outputs: list[int], mapped: list[tuple[int, int]]) -> None:
    """In the forked child: a process of its own, as a cold worker would be, then the worker itself."""
    os.setsid()  # a session of its own: the grid's stop (and only it) reaches it and what it starts
    from peftbench.execution.workers import die_with_parent

    die_with_parent(os.getppid())
    os.close(channel)  # the warm process's alone: the grid's end must see it close when the warm process dies
    for fd, received in zip(OUTPUTS, outputs):
        os.dup2(received, fd)  # the grid's stdout and stderr as they are now
        os.close(received)
    _map_again(mapped)
    os.chdir(order.cwd)
    os.environ.clear()
    os.environ.update(order.env)
    _blas_threads_as_cold()
    from peftbench.run import worker

    sys.exit(worker.main(order.argv))


def _serve(channel: Connection) -> None:
    """Fork a worker for each order and report its pid, then its exit status; end when the grid's end closes."""
    from peftbench.execution.workers import signal_group

    fork = multiprocessing.get_context("fork")
    mapped = mapped_file_pages()
    while True:
        try:
            order = channel.recv()
            outputs = [reduction.recv_handle(channel) for _ in OUTPUTS]
        except (EOFError, OSError):
            return  # the grid process closed its end, or died
        unsafe = fork_unsafe()
        if unsafe:
            for fd in outputs:
                os.close(fd)
            channel.send(("cold", f"not forked: {unsafe}"))
            continue
        child = fork.Process(target=_become_worker, args=(order, channel.fileno(), outputs, mapped), name=NAME)
        child.start()
        for fd in outputs:
            os.close(fd)
        assert child.pid is not None  # started
        channel.send(("pid", child.pid))
        if child.sentinel not in wait([child.sentinel, channel]):
            signal_group(child.pid, signal.SIGKILL)  # the grid went away while its worker ran: the worker goes too
            child.join()
            return
        child.join()
        channel.send(("exit", child.exitcode))


def main(argv: list[str]) -> int:
    channel = Connection(int(argv[0]))
    for name in PRELOAD:
        __import__(name)
    _serve(channel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

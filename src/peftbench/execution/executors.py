"""Where a grid's runs execute, several at a time: `local` (worker processes on this machine, `--workers N`
at a time, through concurrent.futures) or `ray` (each run a Ray task on a cluster, or on a local Ray instance
started for the grid).

Both have one interface (Executor): `submit(job)` takes a run job, a callable `job(slot, scratch=None) ->
RunOutcome` (runner/protocol.py's RunJob: its trials, the choice on dev, the test evaluation, the saved
weights), and gives back a Future of its RunOutcome: the run's record and where its finished weights lie. The
grid process alone writes the store, whatever the executor. `build` is the one place that reads which
executor the user chose.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import shutil
import signal
import tempfile
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from peftbench import hardware
from peftbench.config.sections import ScaleConfig
from peftbench.errors import UserError
from peftbench.execution import warm
from peftbench.execution.workers import child_environment, stop_all_workers
from peftbench.files import write_atomic
from peftbench.store.schema import RunRecord

RAY_MISSING = "--executor ray needs Ray: pip install 'peftbench[ray]'"
SHARED_MARK = ".peftbench-out"  # a file the grid process leaves in --out; a Ray task that sees it shares the disk


@dataclass
class Slot:
    """What one concurrent run may use: environment for its worker processes (GPUs, CPU threads), and whether
    they start warm (--warm-start: the local executor's; a Ray task starts its workers cold, in a Ray worker
    process that Ray itself keeps and reuses)."""

    env: dict[str, str] = field(default_factory=dict)
    warm_start: bool = False


@dataclass
class RunOutcome:
    record: RunRecord
    weights: Path | None = None  # a finished weights folder on this machine, moved into DIR/<run_id> whole
    weight_files: dict[str, bytes] | None = None  # or the files themselves, sent back through Ray's object store


class Job(Protocol):
    """One whole run: what an executor is given (runner/protocol.py's RunJob)."""

    def __call__(self, slot: Slot, scratch: Path | None = None) -> RunOutcome: ...


class Executor(Protocol):
    concurrent: int  # runs at a time
    one_at_a_time_here: bool  # runs go one after another on this machine: a run may draw its own progress bars

    def submit(self, job: Job) -> Future[RunOutcome]: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def check_available(scale: ScaleConfig) -> None:
    """What the executor needs and can be checked before anything is written: Ray installed, a GPU for
    --device cuda here (a Ray cluster's GPUs are its own business)."""
    if scale.executor == "ray":
        if importlib.util.find_spec("ray") is None:
            raise UserError(RAY_MISSING)
        return
    hardware.likely_device(scale.device)


def build(scale: ScaleConfig, out: Path) -> Executor:
    """The executor the user chose (--executor), sized for this machine or cluster."""
    if scale.executor == "ray":
        return RayExecutor(scale, out)
    import torch

    device = hardware.likely_device(scale.device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if scale.inline:
        return LocalExecutor([Slot()], scale, inline=True)
    count = scale.workers if isinstance(scale.workers, int) else max(1, gpus // scale.num_processes)
    return LocalExecutor(local_slots(count, device.type, scale.num_processes, hardware.allowed_cpus()), scale)


def prestart(scale: ScaleConfig, progress: bool) -> None:
    """Start now the warm processes that the local executor's first workers will be forked from, so that
    their imports (7-9 s on 2 cores) overlap this process's own imports and its planning instead of
    following them. Where the slots are known before any GPU is probed: CPUs, one process a run. A warm
    process whose environment no worker asks for only waits, and ends with this process."""
    if scale.executor != "local" or scale.inline or scale.num_processes != 1 or not scale.warm_start:
        return
    if not warm.available() or hardware.likely_device(scale.device).type != "cpu":
        return
    count = scale.workers if isinstance(scale.workers, int) else 1
    for slot in local_slots(count, "cpu", 1, hardware.allowed_cpus()):
        warm.prestart(child_environment(worker_env(slot, bars=progress and count == 1)))


def worker_env(slot: Slot, bars: bool) -> dict[str, str]:
    """What a run's worker processes get on top of this process's environment: the slot's (threads, cores,
    GPUs) and, when the run draws its own progress bars, their place: tqdm reads its defaults from TQDM_*
    variables, so the worker's bars go under the grid's bar, not over it."""
    return {**slot.env, "TQDM_POSITION": "1"} if bars else slot.env


def local_slots(workers: int, device_type: str, gpus_per_run: int, cpus: list[int]) -> list[Slot]:
    """One slot per concurrent run. On GPUs each gets its own (visible) GPUs; on CPUs the cores are divided,
    so that N runs at once do not each start one thread per core and fight over them: each gets its share of
    threads and, where there are cores enough, cores of its own."""
    if device_type == "cuda":
        visible = _visible_gpus()
        needed = workers * gpus_per_run
        if len(visible) < needed:
            raise UserError(
                f"{workers} worker(s) × {gpus_per_run} process(es) need {needed} GPUs; {len(visible)} visible"
            )
        return [_gpus(visible[i * gpus_per_run : (i + 1) * gpus_per_run]) for i in range(workers)]
    share = len(cpus) // (workers * gpus_per_run)  # threads of each process
    if workers == 1 or share < 1:  # one run keeps what it was given; more runs than cores share them all
        return [_threads(max(share, 1)) for _ in range(workers)]
    cores = share * gpus_per_run  # a run's processes keep to its cores together
    return [_threads(share, cpus[i * cores : (i + 1) * cores]) for i in range(workers)]


def _gpus(visible: list[str]) -> Slot:
    return Slot({"CUDA_VISIBLE_DEVICES": ",".join(visible)})


def _threads(count: float, cpus: list[int] | None = None) -> Slot:
    threads = str(max(1, int(count)))
    pinned = {hardware.CPUS_ENV: ",".join(map(str, cpus))} if cpus else {}
    return Slot({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **pinned})


def _visible_gpus() -> list[str]:
    import torch

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


class LocalExecutor:
    """Runs on this machine through a thread pool: each thread waits on the worker processes of one run."""

    def __init__(self, slots: list[Slot], scale: ScaleConfig, inline: bool = False) -> None:
        self.concurrent = len(slots)
        self.one_at_a_time_here = len(slots) == 1
        self.inline = inline  # every run in this process, one after another (a debugger)
        self.scale = scale
        self._slots: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        for slot in slots:
            slot.warm_start = scale.warm_start
            self._slots.put(slot)
        self._pool = None if inline else ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="peftbench-run")

    def submit(self, job: Job) -> Future[RunOutcome]:
        if self._pool is None:
            future: Future[RunOutcome] = Future()
            future.set_result(self._in_slot(job))
            return future
        return self._pool.submit(self._in_slot, job)

    def _in_slot(self, job: Job) -> RunOutcome:
        slot = self._slots.get()
        try:
            return job(slot)
        finally:
            self._slots.put(slot)

    def cancel(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        stop_all_workers()  # the runs under way: their worker processes are stopped, their threads then return

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def describe(self) -> dict[str, Any]:
        return _described("local", "inline" if self.inline else "process", self.concurrent, self.scale)


class RayExecutor:
    """Each run is a Ray task with its resource needs; Ray schedules, retries tasks whose worker died, and
    sends back the record (and, where the task's machine does not share --out, the weight files)."""

    one_at_a_time_here = False  # the runs' workers are processes of Ray's, on any machine of the cluster

    def __init__(self, scale: ScaleConfig, out: Path) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(RAY_MISSING) from None
        import torch

        self.ray, self.scale, self.out = ray, scale, out
        _join(ray, scale.ray_address or os.environ.get("RAY_ADDRESS"))
        on_gpu = scale.device == "cuda" or (scale.device == "auto" and torch.cuda.is_available())
        need = scale.ray_num_gpus * scale.num_processes if on_gpu else scale.ray_num_cpus
        resources = {"num_gpus": need} if on_gpu else {"num_cpus": need}
        available = ray.available_resources().get("GPU" if on_gpu else "CPU", 1)
        self.concurrent = max(1, int(available // max(need, 1e-9)))
        options: dict[str, Any] = {"max_retries": scale.ray_max_retries, "retry_exceptions": False, **resources}
        self._remote = ray.remote(**options)(run_task)
        self._refs: list[Any] = []
        self.mark = uuid.uuid4().hex
        write_atomic(out / SHARED_MARK, self.mark)  # replaces a link of that name instead of writing through it

    def submit(self, job: Job) -> Future[RunOutcome]:
        ref = self._remote.remote(job, _threads(self.scale.ray_num_cpus), str(self.out), self.mark)
        self._refs.append(ref)
        return ref.future()

    def cancel(self) -> None:
        for ref in self._refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished or already gone: nothing to cancel
                pass

    def close(self) -> None:
        (self.out / SHARED_MARK).unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return _described("ray", "process", self.concurrent, self.scale)


def _described(executor: str, workers: str, concurrent: int, scale: ScaleConfig) -> dict[str, Any]:
    """How the runs were executed, for each run's provenance (not part of its identity)."""
    return {
        "workers": workers,
        "executor": executor,
        "concurrent_runs": concurrent,
        "processes_per_run": scale.num_processes,
        "device_requested": scale.device,
    }


def _join(ray: Any, address: str | None) -> None:
    """Join the cluster at address; no address: a local instance for this grid (nothing to start by hand)."""
    if ray.is_initialized():
        return
    # ray.init makes SIGTERM exit at once; the grid's own handler (interrupts.py) stops it cleanly
    handler = signal.getsignal(signal.SIGTERM)
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def run_task(job: Job, slot: Slot, out: str, mark: str) -> RunOutcome:
    """A Ray task: one whole run in a scratch folder of the task's machine; the weights go back through the
    shared --out when this machine sees it (the grid's mark is there), else through the object store."""
    scratch = Path(tempfile.mkdtemp(prefix="peftbench-ray-"))
    try:
        outcome = job(slot, scratch)
        if outcome.weights is None:
            return outcome
        shared = Path(out)
        if _read_mark(shared) == mark:
            incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=shared))
            shutil.move(str(outcome.weights), incoming / "weights")
            outcome.weights = incoming / "weights"
        else:
            files = sorted(p for p in outcome.weights.rglob("*") if p.is_file())
            outcome.weight_files = {str(p.relative_to(outcome.weights)): p.read_bytes() for p in files}
            outcome.weights = None
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read_mark(out: Path) -> str | None:
    try:
        return (out / SHARED_MARK).read_text(encoding="utf-8")
    except OSError:
        return None


def materialise(outcome: RunOutcome, staging: Path) -> Path | None:
    """The outcome's weights as a folder on this machine (under staging when they came as files)."""
    if outcome.weight_files is None:
        return outcome.weights
    folder = staging / "weights"
    for name, content in outcome.weight_files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder

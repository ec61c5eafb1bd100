"""Where a grid's runs execute, several at a time: `local` (worker processes on this machine, `--workers N`
at a time, through concurrent.futures) or `ray` (each run a Ray task on a cluster, or on a local Ray instance
started for the grid).

Either way an executor takes a function that does one whole run (runner.execute_run: its trials, the choice
on dev, the test evaluation, the saved weights) and gives back a Future of a `RunOutcome`: the run's record
and where its finished weights lie. The grid process alone writes the store, whatever the executor.
"""

from __future__ import annotations

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
from typing import Any, Callable

from .errors import UserError

EXECUTORS = ("local", "ray")
SHARED_MARK = ".peftbench-out"  # a file the grid process leaves in --out; a Ray task that sees it shares the disk


@dataclass
class Slot:
    """What one concurrent run may use: environment for its worker processes (GPUs, CPU threads)."""

    env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunOutcome:
    record: dict[str, Any]
    weights: Path | None = None  # a finished weights folder on this machine, moved into DIR/<run_id> whole
    weight_files: dict[str, bytes] | None = None  # or the files themselves, sent back through Ray's object store


def local_slots(workers: int, device_type: str, gpus_per_run: int, cpu_count: int) -> list[Slot]:
    """One slot per concurrent run. On GPUs each gets its own (visible) GPUs; on CPUs the cores are divided,
    so that N runs at once do not each start one thread per core and fight over them."""
    if device_type == "cuda":
        visible = _visible_gpus()
        if len(visible) < workers * gpus_per_run:
            raise UserError(f"{workers} worker(s) × {gpus_per_run} process(es) need {workers * gpus_per_run} GPUs; {len(visible)} visible")
        return [Slot({"CUDA_VISIBLE_DEVICES": ",".join(visible[i * gpus_per_run : (i + 1) * gpus_per_run])}) for i in range(workers)]
    threads = str(max(1, cpu_count // (workers * gpus_per_run)))
    return [Slot({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}) for _ in range(workers)]


def _visible_gpus() -> list[str]:
    import torch

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


class LocalExecutor:
    """Runs on this machine through a thread pool: each thread waits on the worker processes of one run."""

    def __init__(self, slots: list[Slot], inline: bool = False) -> None:
        self.concurrent = len(slots)
        self.inline = inline  # every run in this process, one after another (a debugger)
        self._slots: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        for slot in slots:
            self._slots.put(slot)
        self._pool = None if inline else ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="peftbench-run")

    def submit(self, do_run: Callable[[Slot], RunOutcome]) -> Future:
        if self._pool is None:
            future: Future = Future()
            future.set_result(self._in_slot(do_run))
            return future
        return self._pool.submit(self._in_slot, do_run)

    def _in_slot(self, do_run: Callable[[Slot], RunOutcome]) -> RunOutcome:
        slot = self._slots.get()
        try:
            return do_run(slot)
        finally:
            self._slots.put(slot)

    def cancel(self) -> None:
        from .execution import stop_all_workers

        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        stop_all_workers()  # the runs under way: their worker processes are stopped, their threads then return

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


@dataclass
class RayOptions:
    address: str | None = None  # None: RAY_ADDRESS, else a local instance started for this grid
    num_cpus: float = 1.0  # per run on CPU
    num_gpus: float = 1.0  # per run on GPU (× --num-processes)
    max_retries: int = 3  # a task whose worker process died is run again this many times


class RayExecutor:
    """Each run is a Ray task with its resource needs; Ray schedules, retries tasks whose worker died, and
    sends back the record (and, where the task's machine does not share --out, the weight files)."""

    def __init__(self, options: RayOptions, on_gpu: bool, gpus_per_run: int, out: Path) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'peftbench[ray]'") from None
        self.ray = ray
        address = options.address or os.environ.get("RAY_ADDRESS")
        if not ray.is_initialized():
            # ray.init makes SIGTERM exit at once; the grid's own handler (interrupts.py) stops it cleanly
            handler = signal.getsignal(signal.SIGTERM)
            # No address: a local instance for this grid (nothing to start by hand); otherwise join the cluster.
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, handler)
        resources = {"num_gpus": options.num_gpus * gpus_per_run} if on_gpu else {"num_cpus": options.num_cpus}
        self.concurrent = max(1, int(ray.available_resources().get("GPU" if on_gpu else "CPU", 1) // max(next(iter(resources.values())), 1e-9)))
        self._remote = ray.remote(max_retries=options.max_retries, retry_exceptions=False, **resources)(_run_remotely)
        self._refs: list[Any] = []
        self.out = out
        self.mark = uuid.uuid4().hex
        (out / SHARED_MARK).write_text(self.mark, encoding="utf-8")

    def submit(self, payload: dict[str, Any], data: Any) -> Future:
        ref = self._remote.remote(payload, data, str(self.out), self.mark)
        self._refs.append(ref)
        return ref.future()

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def cancel(self) -> None:
        for ref in self._refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished or already gone: nothing to cancel
                pass

    def close(self) -> None:
        (self.out / SHARED_MARK).unlink(missing_ok=True)


def _run_remotely(payload: dict[str, Any], data: Any, out: str, mark: str) -> RunOutcome:
    """A Ray task: one whole run in a scratch folder of the task's machine; the weights go back through the
    shared --out when this machine sees it (the grid's mark is there), else through the object store."""
    from .runner import execute_payload

    scratch = Path(tempfile.mkdtemp(prefix="peftbench-ray-"))
    try:
        outcome = execute_payload(payload, data, scratch)
        if outcome.weights is None:
            return outcome
        shared = Path(out)
        if _read_mark(shared) == mark:
            incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=shared))
            shutil.move(str(outcome.weights), incoming / "weights")
            outcome.weights = incoming / "weights"
        else:
            outcome.weight_files = {
                str(p.relative_to(outcome.weights)): p.read_bytes() for p in sorted(outcome.weights.rglob("*")) if p.is_file()
            }
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

"""Measurements of a run: parameter counts, peak memory, wall-clock timing and whether other processes shared
its CPU cores, each with how it was taken."""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import psutil
import torch

from peftbench.hardware import allowed_cpus

# Written into every run JSON so a reader knows what each figure means.
MEASUREMENT_NOTES = {
    "total_params": "parameters of the model as deployed, each counted once: tied weights once, and not the "
    "frozen copy of the classifier head that peft keeps next to the trained one (modules_to_save)",
    "trainable_params": "parameters with requires_grad after the method is applied",
    "train_time_s": "wall-clock time of the training steps of all epochs, evaluation excluded, summed over every "
    "learning rate the run tried (what the run cost, whichever rate was chosen)",
    "eval_time_s": "wall-clock time of all dev evaluations (after each epoch, and every N steps with --eval-every N), "
    "summed over every learning rate tried",
    "total_time_s": "train_time_s + eval_time_s (the reference's 'train time' included evaluation)",
    "train_it_per_s": "optimiser steps per second, the first step of the run (allocation, lazy init) left out",
    "eval_it_per_s": "evaluation batches per second over all evaluations",
    "train_samples_per_s": "training examples per second over the same steps as train_it_per_s",
    "eval_loss": "mean cross-entropy over the evaluation examples (last epoch)",
    "eval_loss_sum": "sum over evaluation batches of each batch's mean loss, as the reference printed it",
    "f1_macro": "unweighted mean of per-class F1 (scikit-learn)",
    "majority_accuracy": "accuracy of always predicting the eval set's most frequent class",
    "cpu_busy_elsewhere": "share of the time of the CPU cores a run's worker may use (its affinity) that other "
    "processes used while it worked, the highest over the run's workers; at 0.2 or more its times and speeds read "
    "high",
}
# From this share of the cores taken by other processes on, a run's times are flagged in its report. On a
# 2-core EPYC a LoRA worker measured 0.03 on a core of its own (taskset), 0.50 beside a second training.
BUSY_ELSEWHERE = 0.2


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) with each parameter counted once, peft's frozen head copies left out."""
    skipped: set[int] = set()
    for module in model.modules():
        original = getattr(module, "original_module", None)
        # peft's ModulesToSaveWrapper keeps the untouched head as `original_module` beside the trained copy.
        if original is not None and hasattr(module, "modules_to_save"):
            skipped.update(id(p) for p in original.parameters())
    total = trainable = 0
    for parameter in model.parameters():  # parameters() already yields a tied weight once
        if id(parameter) in skipped:
            continue
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return total, trainable


class PeakMemory:
    """Peak memory of one piece of work, relative to what was in use when it started.

    Each run works in a process of its own (worker.py), started before the model and data are loaded, so
    the figure is the run's own. On CUDA: the caching allocator's peak (reset at start) minus the memory
    allocated at start. On CPU: the process's peak resident set (VmHWM, reset at start through
    /proc/self/clear_refs) minus its resident set at start (the interpreter and imported libraries).
    Where the peak cannot be reset, the lifetime peak (ru_maxrss) is used and the method says so.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = ""
        self._baseline_mb = 0.0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline_mb = torch.cuda.memory_allocated(self.device) / 2**20
            self.method = "torch.cuda.max_memory_allocated minus allocated at start"
            return
        self._baseline_mb = _proc_status_mb("VmRSS") or 0.0
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # 5 = reset the peak RSS (VmHWM) to the current RSS
            self.method = "growth of process peak RSS (VmHWM, reset at start) over RSS at start"
        except OSError:
            self.method = "growth of lifetime peak RSS (ru_maxrss, cannot be reset here) over RSS at start"

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self._baseline_mb
        peak = _proc_status_mb("VmHWM")
        if peak is None or "ru_maxrss" in self.method:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        return max(0.0, peak - self._baseline_mb)

    def report(self) -> dict[str, Any]:
        """The figures as they go into a run's result (process_peak_rss_mb: the whole process, CPU only)."""
        figures: dict[str, Any] = {"peak_memory_mb": self.peak_mb(), "peak_memory_method": self.method}
        if self.device.type != "cuda":
            figures["process_peak_rss_mb"] = _proc_status_mb("VmHWM")
        return figures


class CpuLoad:
    """How much of the CPU cores this process may run on went to other processes while it worked.

    Two trainings on one CPU each start a thread per core and stall each other's thread barriers: on a 2-core
    EPYC a LoRA worker trained 4.1 samples/s beside another one against 29.2 alone. A report cannot tell that
    from the speeds, so each worker measures it: the busy time of its allowed cores (psutil, from /proc/stat on
    Linux) less its own CPU time, over wall time × cores; time a hypervisor gave other machines (steal) counts
    as busy too. None where it cannot be told: several processes of one run (the others would count as
    strangers) or a system psutil cannot read."""

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None
        self._cpus: list[int] = []
        self._process: psutil.Process | None = None

    def start(self) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return
        try:
            self._process, self._cpus = psutil.Process(), allowed_cpus()
            self._start = (self._busy_s(), _own_cpu_s(self._process), now())
        except (psutil.Error, OSError, IndexError):
            self._start = None

    def busy_elsewhere(self) -> float | None:
        if self._start is None or self._process is None:
            return None
        busy, own, started = self._start
        try:
            other = (self._busy_s() - busy) - (_own_cpu_s(self._process) - own)
        except (psutil.Error, OSError, IndexError):
            return None
        wall = (now() - started) * len(self._cpus)
        return min(1.0, max(0.0, other / wall)) if wall > 0 else None

    def report(self) -> dict[str, Any]:
        return {"cpu_busy_elsewhere": self.busy_elsewhere()}

    def _busy_s(self) -> float:
        per_cpu = psutil.cpu_times(percpu=True)
        return sum(_busy(per_cpu[i]) for i in self._cpus)


def _busy(times: Any) -> float:
    """A core's time not idle; guest time is already inside user time on Linux, so it is not added twice."""
    idle = sum(getattr(times, name, 0.0) for name in ("idle", "iowait", "guest", "guest_nice"))
    return sum(times) - idle


def _own_cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now() -> float:
    return time.perf_counter()

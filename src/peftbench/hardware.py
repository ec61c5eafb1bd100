"""What the hardware computes fast, so that `auto` settings pick the fast path only where it exists."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

# The CPU cores a worker keeps to (comma-separated), set by the executor that divides a machine between workers.
CPUS_ENV = "PEFTBENCH_CPUS"


def allowed_cpus() -> list[int]:
    """The CPU cores this process may run on (its affinity: `taskset`, a container's or a scheduler's limit);
    every core where the system does not say."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def keep_to_given_cpus() -> None:
    """Keep this process, and the threads it starts from now on, to the cores its executor gave it (CPUS_ENV),
    so that workers side by side neither fight over cores nor count each other as strangers (run.measure)."""
    given = os.environ.get(CPUS_ENV)
    if given and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu) for cpu in given.split(",")})


def likely_device(requested: str = "auto") -> torch.device:
    """The device a worker trains on: `auto` → the GPU when there is one (precision must be resolved before
    accelerate starts); `cpu` even where there is a GPU; `cuda` only where there is one."""
    if requested == "cuda" and not torch.cuda.is_available():
        from peftbench.errors import UserError

        raise UserError("--device cuda, but torch sees no CUDA GPU here")
    if requested == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16(device: torch.device) -> bool:
    """bf16 matrix products in hardware: AMX or AVX512-BF16 on CPUs, compute capability 8+ on GPUs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def _given(requested: str | None) -> str | None:
    """A setting the user chose, or None where it is left to `auto` (unset is auto too)."""
    return None if requested in (None, "auto") else requested


def resolve_precision(requested: str | None, device: torch.device) -> str:
    """`auto` → bf16 where native, fp16 on GPUs without bf16 (with loss scaling), fp32 elsewhere."""
    if given := _given(requested):
        return given
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def emulated_bf16_note(precision: str | None, requested_device: str) -> str | None:
    """Said before training when bf16 is chosen where the CPU would emulate it: on a 2-core AVX2-only EPYC
    bench_train's LoRA step of e5-small ran 0.55 samples/s in bf16 against 12.10 in fp32
    (benchmarks/results/bench_train-lora-avx2-bf16-emulated.txt): 22x as long."""
    if precision != "bf16" or requested_device == "cuda":  # a GPU's bf16 is resolved on the GPU
        return None
    device = likely_device(requested_device)
    if device.type != "cpu" or native_bf16(device):
        return None
    return (
        "--precision bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated here, many times slower than fp32 "
        "(22x for e5-small's LoRA step on an AVX2-only EPYC); --precision auto or fp32 trains in fp32"
    )


def resolve_attention(requested: str | None, device: torch.device) -> str:
    """`auto` → eager on CPUs (measured here: a LoRA step of e5-small at 64×86 tokens in bf16 takes 2.1 s
    with eager attention, 2.9 s with SDPA, whose CPU backward dominates), sdpa on GPUs."""
    return _given(requested) or ("sdpa" if device.type == "cuda" else "eager")


def length_multiple(device: torch.device) -> int | None:
    """Batches on a GPU are padded to a multiple of 16 tokens: far fewer distinct shapes (6 up to 86 tokens
    instead of 86), so kernels, autotuned plans and captured CUDA graphs (--compile) are reused, and tensor
    cores take multiples of 8. On a CPU every padded token costs its share of the step, so none."""
    return 16 if device.type == "cuda" else None


def resolve_dropout_masks(requested: str | None, device: torch.device, precision: str) -> str:
    """`auto` → bulk masks (peftbench.run.dropout) where a CPU computes in fp32, torch's own dropout elsewhere.
    In fp32 (AVX2-only EPYC) they cost nothing measurable on dev over paired seeds: prompt tuning −0.0049 over
    12 (6 of 12 lower, t-test p 0.49), LoRA +0.0046 over 6 (p 0.25; benchmarks/results/dropout-stream-e5-small,
    by the rule written there before the runs), and there they take LoRA from 1.02 to 1.28-1.37 of the Trainer's
    samples/s (benchmarks/bench_train.py, with f9a5983's `where`). In bf16 they cost prompt tuning 0.019 over 12
    paired seeds (11 of 12 lower, p 0.003, dropout-e5-small; with torch's bf16 scale too, dropout-scale-e5-small),
    cause not found: so not in bf16 or fp16. On GPUs torch's masks are fast."""
    if given := _given(requested):
        return given
    return "bulk" if device.type == "cpu" and precision == "fp32" else "torch"


def resolve_split_by_length(requested: str | None, device: torch.device) -> str:
    """`auto` → on for CPUs (a step's time grows with the tokens computed, padding included: measured in
    benchmarks/bench_train.py), off for GPUs (launch-bound at these sizes: one pass, padded to a multiple of 16)."""
    return _given(requested) or ("off" if device.type == "cuda" else "on")


CPU_FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # the ones `auto` and speed hinge on


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            line = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return []
    present = set(line.split(":", 1)[-1].split())
    return [flag for flag in CPU_FLAGS_SHOWN if flag in present]


def _precision_reason(device: torch.device) -> str:
    if device.type == "cuda":
        return "GPU computes bf16" if native_bf16(device) else "GPU without bf16: fp16 with loss scaling"
    if native_bf16(device):
        return "CPU computes bf16 natively (AVX512-BF16 or AMX)"
    return "CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated, slower than fp32"


def describe(device: torch.device) -> dict:
    """The device, the CPU flags that matter, and what each `auto` setting resolves to here, and why."""
    described = device_description(device)
    if device.type == "cpu":
        described["flags"] = cpu_flags()
    described["auto"] = {
        "precision": resolve_precision("auto", device),
        "precision_why": _precision_reason(device),
        "attention": resolve_attention("auto", device),
        "dropout_masks": resolve_dropout_masks("auto", device, resolve_precision("auto", device)),
        "split_by_length": resolve_split_by_length("auto", device),
    }
    return described


def device_description(device: torch.device) -> dict[str, Any]:
    """The device's name and size: the GPU's model and count, or the CPU's model, cores and torch threads."""
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device), "count": torch.cuda.device_count()}
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "type": "cpu",
        "name": cpu,
        "cores": os.cpu_count(),
        "allowed_cores": len(allowed_cpus()),  # those it may run on: taskset, a container, --workers N
        "torch_threads": torch.get_num_threads(),
    }

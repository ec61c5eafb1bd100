"""Wall time of one grid run three ways: 1 local worker, 2 local workers, and the Ray executor.

    python benchmarks/bench_scale.py [--model DIR] [--size tiny|base] [--rounds 2] [--ray-cpus 2]

The grid is `peftbench run` of 4 methods x 2 seeds (8 runs) on a small slice of the real data, each variant
into a fresh output folder, run as its own command (so its start-up, model loading and every worker
process count, as a user would see them). Rounds are interleaved (1, 2, ray, 1, 2, ray, ...) so drift of
the machine cancels out. Printed: the machine (CPU model and the flags `auto` depends on, or the GPU), what
`auto` resolved to, seconds per variant and round, and the last lines `ratio <variant>: X.XX`, the wall
time of 1 worker divided by the variant's (above 1: faster).

Without --model a random BERT is written to a temporary folder: `tiny` (the tests' 2-layer model) or `base`
(bert-base's size, 110M parameters, for a GPU machine). With --ray the Ray instance is local (started by
the grid); its CPU count is --ray-cpus, the cores `--workers 2` divides too, so the two are comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from tiny_model import BERT_BASE, write_tiny_bert  # noqa: E402

GRID = ["--methods", "lora,bitfit,ia3,full", "--seeds", "0,1", "--epochs", "1", "--no-progress"]
SLICE = {
    "tiny": ["--max-train-samples", "512", "--max-eval-samples", "128", "--batch-size", "16", "--max-length", "64"],
    "base": ["--max-train-samples", "2048", "--max-eval-samples", "512", "--batch-size", "32", "--max-length", "86"],
}


def variants(ray_cpus: int) -> dict[str, list[str]]:
    return {
        "1 worker": ["--workers", "1"],
        "2 workers": ["--workers", "2"],
        "ray": ["--executor", "ray", "--ray-num-cpus", str(max(1, (os.cpu_count() or 1) // ray_cpus))],
    }


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    from peftbench.hardware import cpu_flags

    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"; GPU: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    except ImportError:
        pass
    return f"CPU: {model}, {os.cpu_count()} cores, flags {' '.join(cpu_flags()) or '(none of avx2/avx512/amx)'}{gpu}"


def run_grid(model: Path, out: Path, size: str, extra: list[str]) -> float:
    command = [
        sys.executable,
        "-m",
        "peftbench.cli",
        "run",
        "--model",
        str(model),
        "--out",
        str(out),
        *GRID,
        *SLICE[size],
        *extra,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(
            f"bench_scale: {' '.join(extra)} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
        )
    return seconds


def resolved(out: Path) -> str:
    record = json.loads(next((out / "runs").glob("*.json")).read_text(encoding="utf-8"))
    device = record["provenance"]["device"]
    auto = device.get("auto", {})
    return (
        f"device {device['type']}; auto: precision {auto.get('precision')} ({auto.get('precision_why')}), "
        f"attention {auto.get('attention')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a local model folder (default: a random BERT of --size)")
    parser.add_argument("--size", choices=sorted(SLICE), default="tiny", help="random model size and data slice")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three variants")
    parser.add_argument(
        "--ray-cpus", type=int, default=2, help="Ray tasks at once on CPU (cores are split like --workers)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        model = args.model or write_tiny_bert(Path(scratch) / "model", **(BERT_BASE if args.size == "base" else {}))
        times: dict[str, list[float]] = {name: [] for name in variants(args.ray_cpus)}
        print(machine(), flush=True)
        for round_ in range(args.rounds):
            for name, extra in variants(args.ray_cpus).items():
                out = Path(scratch) / f"{name.replace(' ', '-')}-{round_}"
                times[name].append(run_grid(model, out, args.size, extra))
                if round_ == 0 and name == "1 worker":
                    print(resolved(out), flush=True)
                print(f"round {round_ + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    base = min(times["1 worker"])
    print(f"grid: 8 runs ({' '.join(GRID[:4])}), {args.size} model; best of {args.rounds} round(s), wall seconds:")
    for name, seconds in times.items():
        print(f"  {name:10s} {min(seconds):7.1f} s")
    for name, seconds in times.items():
        print(f"ratio {name}: {base / min(seconds):.2f}")


if __name__ == "__main__":
    main()

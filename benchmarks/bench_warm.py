"""What a worker process costs before it trains, and what warm start saves:

    python benchmarks/bench_warm.py [--runs 6] [--rounds 2] [--variants warm,cold] [--model DIR]

Measured, each as its own command (so start-up counts as a user sees it), rounds interleaved so that drift
of the machine cancels out:
- `import peftbench.run.worker` in a fresh interpreter, --runs times (what every cold worker pays);
- `peftbench run` of one tiny run (the tests' 2-layer random BERT, 32 training examples, 1 epoch);
- `peftbench run` of --runs tiny runs (six methods, the same slice), with warm start (the default) and with
  `--warm-start off` (every worker a fresh interpreter, as before warm start existed).
Printed: the machine, what `auto` resolved to, each time, the cost of one run more in a grid
((grid − one run) / (runs − 1)), and the ratio the targets are about: `ratio <variant>: X.XX`, the grid's
wall time over that of the --runs cold imports (below 1: the grid costs less than its workers' imports did).
`--variants before` measures a peftbench without warm start (before it existed: no option is passed).

    python benchmarks/bench_warm.py --memory [--model e5-small-offline] [--method lora] [--seeds 0,1,2]

instead trains one method at each of --seeds with warm start, then with `--warm-start off` (a grid each, the
demo preset cut to 128 training examples and one epoch) and prints each run's peak memory (growth of its
worker's resident set over its start, run/measure.py), its worker's whole peak resident set and its training
samples/s, then mean ± std over the seeds, warm beside cold: warm start must change neither what a run's
memory reads nor how fast it trains.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from bench_scale import machine, resolved  # noqa: E402
from tiny_model import write_tiny_bert  # noqa: E402

METHODS = ["lora", "bitfit", "ia3", "full", "prompt-tuning", "p-tuning", "prefix-tuning", "ln-tuning"]
SLICE = ["--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "16", "--max-length", "32"]
FLAGS = {"warm": [], "cold": ["--warm-start", "off"], "before": []}


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        sys.exit(f"bench_warm: {' '.join(command[-6:])} failed (exit {done.returncode}): {done.stderr[-800:]}")
    return time.perf_counter() - started


def cold_imports(count: int) -> float:
    return sum(timed([sys.executable, "-c", "import peftbench.run.worker"]) for _ in range(count))


def grid(model: Path, out: Path, methods: list[str], flags: list[str]) -> float:
    command = [sys.executable, "-m", "peftbench.cli", "run", "--model", str(model), "--out", str(out)]
    return timed([*command, "--methods", ",".join(methods), "--epochs", "1", "--no-progress", *SLICE, *flags])


MEMORY_SLICE = ["--preset", "demo", "--epochs", "1", "--max-train-samples", "128", "--no-progress"]
SAME_RUN = ("peak_memory_mb", "process_peak_rss_mb", "train_samples_per_s")


def memory(model: str, method: str, seeds: str) -> None:
    """Each seed warm then cold, one grid each, adjacent in time so that drift of the machine cancels out."""
    import json
    import statistics

    figures: dict[str, list[dict]] = {"warm": [], "cold": []}
    with tempfile.TemporaryDirectory(prefix="bench-warm-memory-") as scratch:
        for seed in seeds.split(","):
            for variant in ("warm", "cold"):
                out = Path(scratch) / f"{variant}-{seed}"
                command = [sys.executable, "-m", "peftbench.cli", "run", "--model", model, "--out", str(out)]
                timed([*command, "--methods", method, "--seeds", seed, *MEMORY_SLICE, *FLAGS[variant]])
                if not figures["warm"] and variant == "warm":
                    print(resolved(out), flush=True)
                result = json.loads(next((out / "runs").glob("*.json")).read_text(encoding="utf-8"))["result"]
                assert result["worker_start"] == variant, result["worker_start"]
                figures[variant].append({"seed": seed, **{key: result[key] for key in SAME_RUN}})
                print(f"seed {seed} {variant}: " + ", ".join(f"{k} {result[k]:.1f}" for k in SAME_RUN), flush=True)
    print(f"{method} on {model}, {' '.join(MEMORY_SLICE[:-1])}, seeds {seeds}; warm / cold:")
    for key in SAME_RUN:
        shown = []
        for variant in ("warm", "cold"):
            values = [f[key] for f in figures[variant]]
            shown.append(f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}")
        ratio = statistics.mean(f[key] for f in figures["warm"]) / statistics.mean(f[key] for f in figures["cold"])
        print(f"  {key} mean ± std: {' / '.join(shown)}; ratio warm/cold {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a local model folder (default: the tests' tiny random BERT)")
    parser.add_argument("--runs", type=int, default=6, help="runs in the grid, and cold imports to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--variants", default="warm,cold", help="warm, cold (--warm-start off), or both")
    parser.add_argument("--memory", action="store_true", help="peak memory warm against cold instead of times")
    parser.add_argument("--method", default="lora", help="with --memory: the method trained")
    parser.add_argument("--seeds", default="0,1,2", help="with --memory: its seeds")
    args = parser.parse_args()
    if args.memory:
        print(machine(), flush=True)
        return memory(str(args.model or "e5-small-offline"), args.method, args.seeds)
    variants = args.variants.split(",")
    methods = METHODS[: args.runs]
    times: dict[str, list[float]] = {"imports": [], **{f"{v} 1 run": [] for v in variants}}
    times.update({f"{v} {args.runs} runs": [] for v in variants})
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as scratch:
        model = args.model or write_tiny_bert(Path(scratch) / "model")
        for round_ in range(args.rounds):
            times["imports"].append(cold_imports(args.runs))
            print(f"round {round_ + 1}: {args.runs} cold imports: {times['imports'][-1]:.1f} s", flush=True)
            for variant in variants:
                for chosen in (methods[:1], methods):
                    out = Path(scratch) / f"{variant}-{len(chosen)}-{round_}"
                    name = f"{variant} {len(chosen)} run" + ("s" if len(chosen) > 1 else "")
                    times[name].append(grid(model, out, chosen, FLAGS[variant]))
                    if round_ == 0 and len(chosen) == 1:
                        print(resolved(out), flush=True)
                    print(f"round {round_ + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    best = {name: min(seconds) for name, seconds in times.items()}
    print(f"best of {args.rounds} round(s), wall seconds:")
    for name, seconds in best.items():
        print(f"  {name:14s} {seconds:7.1f} s")
    for variant in variants:
        one, many = best[f"{variant} 1 run"], best[f"{variant} {args.runs} runs"]
        print(f"one run more in a grid, {variant}: {(many - one) / max(args.runs - 1, 1):.1f} s")
    for variant in variants:
        print(f"ratio {variant}: {best[f'{variant} {args.runs} runs'] / best['imports']:.2f}")


if __name__ == "__main__":
    main()

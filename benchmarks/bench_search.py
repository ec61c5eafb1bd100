"""The full learning-rate grid against successive halving: the rate each chooses on dev, and what each costs.

    python benchmarks/bench_search.py --out DIR [--model e5-small-offline] [--method lora]
        [--lr-grid 3e-4,1e-3,3e-3,1e-2] [--seeds 0,1] [-- extra peftbench run options]

For each seed, `peftbench run --search grid` and `--search halving` on the same method, rates, seed and
protocol (PROTOCOL below: --select-only, so the test split is never read; the choice is on dev alone), into
DIR/grid and DIR/halving (a rerun resumes). Then prints per seed and search the rate chosen, its dev
accuracy, the optimiser steps trained over all rates (and per rate, with where halving stopped each) and
the training minutes, and the totals with halving's share of the grid's compute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SEARCHES = ("grid", "halving")
PROTOCOL = [
    "--preset",
    "tuned",
    "--select-only",
    "--max-train-samples",
    "1024",
    "--max-eval-samples",
    "256",
    "--epochs",
    "2",
    "--eval-every",
    "4",
]


def run(args: argparse.Namespace, search: str, seed: int, extra: list[str]) -> None:
    command = [sys.executable, "-m", "peftbench.cli", "run", "--model", args.model, "--methods", args.method]
    command += ["--lr-grid", args.lr_grid, "--search", search, "--seeds", str(seed), "--no-progress"]
    command += ["--out", str(args.out / search), *PROTOCOL, *extra]
    print("$", " ".join(command[2:]), flush=True)
    if subprocess.run(command).returncode not in (0, 1):
        sys.exit("peftbench run failed")


def record(folder: Path, method: str, seed: int) -> dict | None:
    path = folder / "runs" / f"{method}__seed{seed}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def table(args: argparse.Namespace, seeds: list[int], extra: list[str]) -> None:
    from bench_scale import machine

    # The extra options come after PROTOCOL on the command line, so where both name an option the extra one rules.
    print(f"{machine()}; protocol: {' '.join(PROTOCOL + extra)}; {args.method}, rates {args.lr_grid}")
    print(
        f"{'seed':>4} {'search':8} {'chosen lr':>9} {'dev acc':>8} {'steps':>6} {'minutes':>8}  "
        "steps per rate (stopped at)"
    )
    totals = {s: [0, 0.0] for s in SEARCHES}
    for seed in seeds:
        for search in SEARCHES:
            found = record(args.out / search, args.method, seed)
            if found is None:
                continue
            result = found["result"]
            trials = result.get("trials", [])
            steps = sum(t.get("train_steps") or 0 for t in trials)
            minutes = (result.get("train_time_s") or 0.0) / 60
            totals[search][0] += steps
            totals[search][1] += minutes
            per_rate = ", ".join(
                f"{t['lr']:g}: {t.get('train_steps')}"
                + (f" (stopped at {t['pruned_at_step']})" if t.get("pruned_at_step") else "")
                for t in trials
            )
            print(
                f"{seed:>4} {search:8} {result.get('chosen_lr', float('nan')):>9g} "
                f"{result.get('dev_accuracy', float('nan')):>8.4f} {steps:>6} {minutes:>8.2f}  {per_rate}"
            )
    grid, halving = totals["grid"], totals["halving"]
    print(f"total: grid {grid[0]} steps, {grid[1]:.2f} min; halving {halving[0]} steps, {halving[1]:.2f} min")
    if grid[0] and grid[1]:
        print(f"halving / grid: steps {halving[0] / grid[0]:.2f}, minutes {halving[1] / grid[1]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="e5-small-offline")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--lr-grid", default="3e-4,1e-3,3e-3,1e-2")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--table-only", action="store_true", help="print the table of what DIR holds; train nothing")
    args, extra = parser.parse_known_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = [a for a in extra if a != "--"]
    if not args.table_only:
        for seed in seeds:
            for search in SEARCHES:
                run(args, search, seed, extra)
    table(args, seeds, extra)


if __name__ == "__main__":
    main()

"""Does the fast execution learn what the reference execution learns? Accuracy on dev, side by side, over seeds.

    python benchmarks/bench_execution.py --out DIR [--model e5-small-offline] [--methods lora,prompt-tuning]
        [--seeds 0,1,2] [--executions fast,reference,fast-fp32] [-- extra peftbench run options]

For each seed, and each execution in turn (interleaved, so drift of the machine falls on all of them alike),
runs `peftbench run --preset tuned` into DIR/<execution>, a folder per execution; a rerun resumes. Then
prints per method and execution the dev accuracy of each seed, its mean ± std, the training samples/s and
its ratio to the reference execution.

Only dev accuracy is read: this script decides whether the fast execution may stay the default, and a
choice is never made on the test split (the runs evaluate it once, as the preset does, and `peftbench run`
prints it in its log lines; the table leaves it out).

`fast-fp32` is the fast execution with bf16 turned off: what `--execution fast` resolves to on a CPU
without native bf16 (AVX2 only), so one machine shows both paths a user's machine may take.
The `fast-probe-*` executions run through benchmarks/dropout_probe.py, which changes one part of dropout in
the run's own process (its docstring says which).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

EXECUTION_OPTIONS = {
    "fast": ["--execution", "fast"],
    "reference": ["--execution", "reference"],
    "fast-fp32": ["--execution", "fast", "--precision", "fp32"],
    # one part of the fast execution switched back, to find which part a difference comes from
    "fast-ungrouped": ["--execution", "fast", "--group-by-length", "off"],
    "fast-torch-dropout": ["--execution", "fast", "--dropout-masks", "torch"],
    "fast-bulk-dropout": ["--execution", "fast", "--dropout-masks", "bulk"],
    "fast-unsplit": ["--execution", "fast", "--split-by-length", "off"],
    # one part of dropout changed in the run's own process by benchmarks/dropout_probe.py (see its docstring)
    "fast-probe-none": ["--execution", "fast", "--dropout-masks", "torch"],
    "fast-probe-torch-reseeded": ["--execution", "fast", "--dropout-masks", "torch"],
    "fast-probe-bulk-attention": ["--execution", "fast", "--dropout-masks", "bulk"],
    "fast-probe-bulk-hidden": ["--execution", "fast", "--dropout-masks", "bulk"],
}
PROBE = "fast-probe-"
# Folders of earlier executions, shown with --table-only when DIR holds them (same protocol, older code).
EXECUTION_OPTIONS_SHOWN_ONLY = ("fast-length-only",)
PROTOCOL = ["--preset", "tuned", "--max-train-samples", "3072", "--max-eval-samples", "512", "--epochs", "1"]


def cpu_line() -> str:
    import torch

    from peftbench.hardware import cpu_flags, device_description

    flags = " ".join(cpu_flags()) or "none of avx2/avx512/amx"
    return f"cpu: {device_description(torch.device('cpu'))['name']}, {os.cpu_count()} cores, flags {flags}"


def run(args: argparse.Namespace, execution: str, seed: int, extra: list[str]) -> None:
    if execution.startswith(PROBE):
        entry = [str(Path(__file__).with_name("dropout_probe.py")), execution.removeprefix(PROBE)]
    else:
        entry = ["-m", "peftbench.cli"]
    command = [
        sys.executable,
        *entry,
        "run",
        "--model",
        args.model,
        "--methods",
        args.methods,
        "--seeds",
        str(seed),
        "--out",
        str(args.out / execution),
        "--no-progress",
        *PROTOCOL,
        *EXECUTION_OPTIONS[execution],
        *extra,
    ]
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(command)
    if done.returncode not in (0, 1):  # 1: some run failed, which the table shows
        sys.exit(f"peftbench run exited {done.returncode}")


def records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / "runs").glob("*.json"))]


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def table(args: argparse.Namespace, executions: list[str], seeds: list[int], extra: list[str]) -> None:
    print(cpu_line())
    print(f"protocol: {' '.join(PROTOCOL + extra)}, model {args.model}, seeds {','.join(map(str, seeds))}")
    speeds: dict[tuple[str, str], float] = {}
    rows = []
    for execution in executions:
        for method in args.methods.split(","):
            found = [
                r
                for r in records(args.out / execution)
                if r["config"]["method"] == method and r["config"]["train"]["seed"] in seeds
            ]
            found.sort(key=lambda r: r["config"]["train"]["seed"])
            dev = [r["result"]["dev_accuracy"] for r in found if r["result"].get("dev_accuracy") is not None]
            rates = [r["result"]["train_samples_per_s"] for r in found if r["result"].get("train_samples_per_s")]
            speeds[(method, execution)] = statistics.mean(rates) if rates else float("nan")
            resolved = sorted({r["result"].get("precision_used", "?") for r in found})
            statuses = ",".join(r["result"]["status"] for r in found)
            commits = ",".join(sorted({(r["provenance"].get("git_commit") or "?")[:7] for r in found}))
            rows.append(
                (
                    method,
                    execution,
                    "/".join(resolved),
                    " ".join(f"{v:.4f}" for v in dev),
                    mean_std(dev),
                    statuses,
                    commits,
                )
            )
    print(
        f"{'method':14} {'execution':10} {'precision':9} {'dev accuracy per seed':28} {'mean ± std':18} "
        f"{'samples/s':>9} {'× ref':>6}  status, commit"
    )
    for method, execution, precision, per_seed, summary, statuses, commits in rows:
        speed = speeds[(method, execution)]
        ratio = speed / speeds.get((method, "reference"), float("nan"))
        print(
            f"{method:14} {execution:10} {precision:9} {per_seed:28} {summary:18} {speed:9.1f} {ratio:6.2f}  "
            f"{statuses}, {commits}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="e5-small-offline")
    parser.add_argument("--methods", default="lora,prompt-tuning")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--executions", default="fast,reference,fast-fp32")
    parser.add_argument("--table-only", action="store_true", help="print the table of what DIR holds; train nothing")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    executions = args.executions.split(",")
    unknown = [
        e
        for e in executions
        if e not in EXECUTION_OPTIONS and not (args.table_only and e in EXECUTION_OPTIONS_SHOWN_ONLY)
    ]
    if unknown:
        parser.error(f"unknown execution(s) {', '.join(unknown)}; choose from {', '.join(EXECUTION_OPTIONS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if not args.table_only:
        for seed in seeds:
            for execution in executions:
                run(args, execution, seed, extra)
    table(args, executions, seeds, extra)


if __name__ == "__main__":
    main()

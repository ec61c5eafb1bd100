"""benchmarks/bench_train.py runs end to end on the tiny model and ends with its `speedup:` line."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftbench.hardware import resolve_dropout_masks

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def test_benchmark_prints_both_variants_and_a_speedup(tiny_model):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(BENCH), "--model", str(tiny_model), "--method", "lora", "--quick", "--samples", "64", "--batch-size", "16"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("a: reference loop") for line in lines) and any(line.startswith("b: peftbench loop") for line in lines)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert f"dropout masks {resolve_dropout_masks('auto', device)}" in done.stdout and "batches drawn from an epoch over all 6212" in done.stdout
    # the speedup is the ratio of the two rows' samples/s, not a number of its own
    rows = {line.split(":")[0]: float(line.split()[3]) for line in lines if line.startswith(("a: reference loop", "b: peftbench loop"))}
    assert all(rate > 0 for rate in rows.values()) and len(rows) == 2, lines
    match = re.fullmatch(r"speedup: (\d+\.\d\d)", lines[-1])
    assert match, lines[-1]
    assert float(match.group(1)) == pytest.approx(rows["b"] / rows["a"], abs=0.006 + 0.01 * rows["b"] / rows["a"])

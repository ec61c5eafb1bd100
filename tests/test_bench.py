"""benchmarks/bench_train.py runs end to end on the tiny model and ends with its `speedup:` line."""

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def test_benchmark_prints_both_variants_and_a_speedup(tiny_model):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(BENCH), "--model", str(tiny_model), "--method", "lora", "--quick", "--samples", "64", "--batch-size", "16"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("a: reference loop") for line in lines) and any(line.startswith("b: peftbench loop") for line in lines)
    assert "dropout masks lanes" in done.stdout and "batches drawn from an epoch over all 6212" in done.stdout
    match = re.fullmatch(r"speedup: (\d+\.\d\d)", lines[-1])
    assert match and float(match.group(1)) > 0, lines[-1]

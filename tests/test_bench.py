"""benchmarks/bench_train.py runs end to end on the tiny model and ends with its `speedup:` and
`speedup_vs_trainer:` lines."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftbench.hardware import resolve_dropout_masks, resolve_precision, resolve_split_by_length

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def test_benchmark_prints_three_variants_and_two_speedups(tiny_model):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        str(BENCH),
        "--model",
        str(tiny_model),
        "--method",
        "lora",
        "--rounds",
        "1",
        "--warmup-steps",
        "1",
        "--samples",
        "64",
        "--batch-size",
        "16",
        "--memory",
        "round",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    names = ("a: reference loop", "b: peftbench loop", "c: HF Trainer")
    assert all(any(line.startswith(name) for line in lines) for name in names), lines
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert (
        f"dropout masks {resolve_dropout_masks('auto', device, resolve_precision('auto', device))}" in done.stdout
        and f"split by length {resolve_split_by_length('auto', device)}" in done.stdout
        and "batches drawn from an epoch over all 6212" in done.stdout
    )
    # each speedup is the ratio of two rows' samples/s, not a number of its own
    rows = {line.split(":")[0]: float(line.split()[3]) for line in lines if line.startswith(names)}
    assert all(rate > 0 for rate in rows.values()) and len(rows) == 3, lines
    for line, other in ((lines[-2], "a"), (lines[-1], "c")):
        match = re.fullmatch(r"speedup(?:_vs_trainer)?: (\d+\.\d\d)", line)
        assert match and line.startswith("speedup_vs_trainer" if other == "c" else "speedup:"), line
        assert float(match.group(1)) == pytest.approx(
            rows["b"] / rows[other], abs=0.006 + 0.01 * rows["b"] / rows[other]
        )


def test_options_benchmark_times_three_dropout_masks_of_the_models_hidden_size(tiny_model):
    options = BENCH.with_name("bench_options.py")
    command = [
        sys.executable,
        str(options),
        "--model",
        str(tiny_model),
        "--only",
        "5",
        "--batch-size",
        "8",
        "--max-length",
        "64",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    hidden = json.loads((tiny_model / "config.json").read_text())["hidden_size"]
    assert f"one mask of 8x64x{hidden} = {8 * 64 * hidden:,} elements" in done.stdout, done.stdout
    times = re.findall(r"^   (torch dropout|uniform draw|bulk masks).* (\d+\.\d{3}) ms$", done.stdout, re.M)
    assert [name for name, _ in times] == ["torch dropout", "uniform draw", "bulk masks"] and all(
        float(ms) > 0 for _, ms in times
    ), done.stdout


def test_profile_weighs_the_step_against_the_matmul_peak(tiny_model):
    profile = BENCH.with_name("profile_step.py")
    command = [sys.executable, str(profile), "--model", str(tiny_model), "--steps", "1", "--batch-size", "8"]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    share = re.search(
        r"matrix products [\d.]+ s \(([\d.]+)%\), ([\d.]+) GFLOP at \d+ GFLOP/s = ([\d.]+)% of", done.stdout
    )
    assert share and 0 < float(share[1]) < 100 and float(share[2]) > 0 and float(share[3]) > 0, done.stdout
    assert re.search(r"with the matrix products at the peak: [\d.]+ s per step \(the step [\d.]+x", done.stdout)


def _bench_train():
    """benchmarks/bench_train.py as a module, for its helpers."""
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_train", bench)  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def test_timed_batches_stand_for_the_epoch():
    """bench_train times each variant's batches at evenly spaced ranks of their cost, not at fixed positions."""
    bench = _bench_train()
    costs = [(7 * i) % 100 for i in range(100)]  # a permutation of 0..99: cost k sits at one position
    positions = bench.representative_positions(costs, warmup_steps=3, timed_steps=10)
    timed = positions[3:]
    assert sorted(costs[i] for i in timed) == list(range(5, 100, 10))
    assert len(set(positions)) == 13
    assert positions == bench.representative_positions(costs, warmup_steps=3, timed_steps=10)  # seeded


def test_prefix_probe_weighs_a_fresh_prefix_against_the_models_own_keys_and_values(tmp_path):
    from tiny_model import write_tiny_decoder

    folder = write_tiny_decoder(tmp_path / "llama", "llama")
    command = [sys.executable, str(BENCH.with_name("prefix_init.py")), "--models", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = re.search(r"own keys per head: mean ([\d.]+) over layers .*own values: mean ([\d.]+)", done.stdout)
    prefix = re.search(r"fresh prefix: keys ([\d.]+), values ([\d.]+) per head", done.stdout)
    cosine = re.search(r"with the fresh prefix vs without: cosine mean (-?[\d.]+)", done.stdout)
    assert keys and prefix and cosine, done.stdout
    assert all(float(x) > 0 for x in (*keys.groups(), *prefix.groups())) and -1 <= float(cosine[1]) < 0.999


@pytest.mark.parametrize("native", [False, True])
def test_bf16_emulated_on_a_cpu_gets_no_peak_and_no_share_of_one(monkeypatch, native):
    """An emulated bf16 product is slower than the model's own linears (348% of "peak" was printed): no peak."""
    bench = _bench_train()
    monkeypatch.setattr(bench, "native_bf16", lambda device: native)
    peaks = bench.measured_peaks({"bf16", "fp32"}, torch.device("cpu"), 64)
    assert peaks["fp32"] > 0 and (peaks["bf16"] is None) == (not native)
    assert ("emulated" in bench.peak_line(peaks)) == (not native)
    cells = bench.peak_cells(peaks["bf16"], flops_per_sample=1e9, achieved=1e9)
    assert (cells.split() == ["-", "-"]) == (not native) and len(cells) == 16
    assert bench.peak_cells(2e9, flops_per_sample=1e9, achieved=1e9).split() == ["2.0", "50.0%"]

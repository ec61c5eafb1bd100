"""Scale-out: several runs at once (local workers, Ray), shards and claims on one shared --out, one run over
several processes, and the device switch. Tiny random BERT on CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import processes

from peftbench import cli, hardware

QUICK = [
    "--max-train-samples",
    "64",
    "--max-eval-samples",
    "32",
    "--batch-size",
    "16",
    "--max-length",
    "32",
    "--no-progress",
    "--epochs",
    "1",
]
GRID = ["--methods", "lora,bitfit,full,ia3"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _runs(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "runs").glob("*.json"))}


def _command(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "peftbench.cli",
        "run",
        "--model",
        str(model),
        *GRID,
        "--out",
        str(out),
        *QUICK,
        *extra,
    ]


def _same_results(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        ra, rb = a[name]["result"], b[name]["result"]
        assert ra["status"] == rb["status"], name
        # the same computation with a different number of CPU threads: float sums in another order
        assert abs(ra["accuracy"] - rb["accuracy"]) <= 1 / 32 and abs(ra["eval_loss"] - rb["eval_loss"]) < 1e-3, name


@pytest.fixture(scope="module")
def one_worker(tiny_model, tmp_path_factory) -> dict[str, dict]:
    """The grid run one run at a time, in worker processes: what every other way of running it must match."""
    out = tmp_path_factory.mktemp("one-worker")
    done = subprocess.run(
        _command(tiny_model, out, "--workers", "1"), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return _runs(out)


def test_two_local_workers_write_what_one_writes(tiny_model, one_worker, tmp_path):
    assert (
        cli.main(["run", "--model", str(tiny_model), *GRID, "--out", str(tmp_path / "two"), *QUICK, "--workers", "2"])
        == 0
    )
    two = _runs(tmp_path / "two")
    _same_results(one_worker, two)
    assert {r["provenance"]["execution"]["concurrent_runs"] for r in two.values()} == {2}
    cores = len(hardware.allowed_cpus())
    if cores >= 2:  # each worker keeps to half the cores, with as many threads
        devices = [r["provenance"]["device"] for r in two.values()]
        assert {(d["allowed_cores"], d["torch_threads"]) for d in devices} == {(cores // 2, cores // 2)}, devices
    assert not list((tmp_path / "two" / "claims").glob("*.json"))  # every claim released


def _together(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    started = [
        subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in started]


def _done_count(stdout: str) -> int:
    line = next(line for line in stdout.splitlines() if "run(s) done" in line)
    return int(line.split()[0])


def _trained_ids(stderr: str) -> list[str]:
    return [line.split("] ", 1)[1].split(":")[0] for line in stderr.splitlines() if ": started: " in line]


def test_two_shards_started_together_on_one_out_run_every_run_once(tiny_model, tmp_path):
    shards = _together(
        _command(tiny_model, tmp_path, "--shard", "1/2"), _command(tiny_model, tmp_path, "--shard", "2/2")
    )
    for done in shards:
        assert done.returncode == 0, done.stderr
    trained = [run for done in shards for run in _trained_ids(done.stderr)]
    assert sorted(trained) == sorted(_runs(tmp_path)) and len(trained) == 4  # each run trained by exactly one shard
    assert sum(_done_count(done.stdout) for done in shards) == 4


def test_a_shard_alone_trains_its_part_and_the_other_shard_the_rest(tiny_model, tmp_path):
    """A job array whose jobs run one after another (a throttled --array=0-7%2): each job stores its part."""
    base = [
        "run",
        "--model",
        str(tiny_model),
        *GRID,
        "--out",
        str(tmp_path),
        *QUICK,
        "--dry-run",
        "--workers",
        "inline",
    ]
    assert cli.main([*base, "--shard", "1/2"]) == 0
    first = set(_runs(tmp_path))
    assert len(first) == 2
    assert cli.main([*base, "--shard", "2/2"]) == 0
    assert len(set(_runs(tmp_path)) - first) == 2  # the other two: every run of the grid, each stored once


def test_two_identical_commands_together_never_train_a_run_twice(tiny_model, tmp_path):
    both = _together(_command(tiny_model, tmp_path), _command(tiny_model, tmp_path))
    for done in both:
        assert done.returncode == 0, done.stderr
    trained = [run for done in both for run in _trained_ids(done.stderr)]
    assert len(trained) == len(set(trained)) == 4, [d.stderr for d in both]
    assert len(_runs(tmp_path)) == 4


def test_a_command_of_other_settings_on_a_folder_being_written_is_refused(tiny_model, tmp_path):
    two = ["--methods", "lora,bitfit"]  # replaces GRID's: the last --methods wins
    first, second = _together(
        _command(tiny_model, tmp_path, "--lr", "3e-4", *two), _command(tiny_model, tmp_path, "--lr", "1e-2", *two)
    )
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 2], (first.stderr, second.stderr)
    refused = first if first.returncode == 2 else second
    assert "other settings" in refused.stderr.strip().splitlines()[-1] and "Traceback" not in refused.stderr
    assert {r["config"]["lr"] for r in _runs(tmp_path).values()} == {3e-4 if first.returncode == 0 else 1e-2}


def test_device_cpu_runs_on_the_cpu(tiny_model, tmp_path):
    assert (
        cli.main(
            ["run", "--model", str(tiny_model), "--methods", "lora", "--out", str(tmp_path), *QUICK, "--device", "cpu"]
        )
        == 0
    )
    record = _runs(tmp_path)["lora__seed123"]
    assert (
        record["provenance"]["device"]["type"] == "cpu"
        and record["provenance"]["execution"]["device_requested"] == "cpu"
    )


def test_device_cuda_without_a_gpu_is_one_line(tiny_model, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    code = cli.main(
        ["run", "--model", str(tiny_model), "--methods", "lora", "--out", str(tmp_path), *QUICK, "--device", "cuda"]
    )
    assert code == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_two_processes_train_one_run_like_one_process(tiny_model, one_worker, tmp_path):
    """Data-parallel over 2 gloo processes, each with half of every batch: the global batch and the steps are
    those of one process, so the run is the same computation; dropout draws its masks per process (other
    masks), so accuracy may move by a few of the 32 examples, the eval count must be exact."""
    two = subprocess.run(
        _command(tiny_model, tmp_path, "--num-processes", "2", "--methods", "lora,full"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = one_worker, _runs(tmp_path)
    assert sorted(b) == ["full__seed123", "lora__seed123"]  # one run JSON per run, not one per process
    for name, record in b.items():
        result = record["result"]
        assert len(result["predictions"]) == len(result["references"]) == record["data"]["eval_examples"] == 32
        assert result["processes"] == 2 and result["global_batch_size"] == 16 and result["per_process_batch_size"] == 8
        assert result["train_steps"] == a[name]["result"]["train_steps"]
        assert abs(result["accuracy"] - a[name]["result"]["accuracy"]) <= 4 / 32, name
        # 4 steps apart only in dropout masks: the eval loss moves in the 4th decimal (measured: ≤ 1e-4)
        assert abs(result["eval_loss"] - a[name]["result"]["eval_loss"]) < 0.01, name


def _ray_task_process(before: set[int]) -> int | None:
    """The Ray worker process running one of our runs: the parent of a new peftbench.run.worker process, whose
    title Ray sets to `ray::<task>` (any other peftbench on the machine, a test suite included, is left alone)."""
    table = processes()
    for pid, (parent, command) in table.items():
        if (
            pid not in before
            and "peftbench.run.worker" in command
            and parent in table
            and table[parent][1].startswith("ray::")
        ):
            return parent
    return None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the Ray worker through /proc (Linux)")
def test_a_ray_worker_killed_mid_run_is_retried_and_no_run_is_lost_or_doubled(tiny_model, one_worker, tmp_path):
    """The Ray executor on a local instance, one of its task processes killed mid-run: Ray runs that task
    again, and the grid writes what the local executor writes (the retried run starts afresh, same seed)."""
    pytest.importorskip("ray")
    before = set(processes())
    grid = subprocess.Popen(
        _command(tiny_model, tmp_path, "--executor", "ray"),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline, killed = time.monotonic() + 300, None
    while killed is None and time.monotonic() < deadline and grid.poll() is None:
        killed = _ray_task_process(before)
        time.sleep(0.05)
    if killed is not None:
        time.sleep(0.5)  # under way: its worker process is loading the model or training
        os.kill(killed, signal.SIGKILL)
    out, err = grid.communicate(timeout=600)
    assert killed is not None, err[-3000:]
    assert grid.returncode == 0, err[-3000:]
    assert sorted(_runs(tmp_path)) == sorted(_trained_ids(err)) and len(_runs(tmp_path)) == 4  # each run once
    assert not list((tmp_path / "failed").glob("*.json")) and _done_count(out) == 4
    runs = _runs(tmp_path)
    _same_results(one_worker, runs)
    assert all(
        (tmp_path / name / "adapter_config.json").exists() or (tmp_path / name / "config.json").exists()
        for name in runs
    )
    assert {r["provenance"]["execution"]["executor"] for r in runs.values()} == {"ray"}


@pytest.mark.parametrize("shared", [True, False])
def test_ray_task_weights_come_back_through_shared_out_or_the_object_store(tmp_path, monkeypatch, shared):
    """A task's weights: moved into --out when its node sees the grid's mark there, else sent as bytes."""
    from peftbench.execution import executors
    from peftbench.execution.executors import RunOutcome, Slot, materialise

    def one_run(slot, scratch):
        (scratch / "w").mkdir()
        (scratch / "w" / "adapter_model.safetensors").write_bytes(b"weights")
        return RunOutcome({"run_id": "lora__seed1"}, scratch / "w")

    out = tmp_path / "out"
    out.mkdir()
    (out / executors.SHARED_MARK).write_text("this-grid", encoding="utf-8")
    outcome = executors.run_task(one_run, Slot(), str(out), "this-grid" if shared else "a-grid-elsewhere")
    assert (outcome.weight_files is None) == shared
    folder = materialise(outcome, tmp_path / "staging")
    assert (folder / "adapter_model.safetensors").read_bytes() == b"weights"
    assert (folder.parent.parent == out) == shared  # shared: already inside --out, renamed into place later

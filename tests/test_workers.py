"""One worker process per run: its own peak memory, a crash that takes only its run, and resume that survives
new versions of peftbench (a run written by schema version 1 is still recognised)."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import worker_children

from peftbench import cli
from peftbench.config.sections import TrainConfig, documented
from peftbench.runner import build

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
]
FIXTURE_V1 = Path(__file__).parent / "fixtures" / "schema1" / "lora__seed123.json"


def _result(out: Path, run: str) -> dict:
    return json.loads((out / "runs" / f"{run}.json").read_text(encoding="utf-8"))["result"]


def test_each_run_reports_its_own_peak_memory_under_a_bar_over_the_grid(tiny_model, tmp_path, capfd):
    """Full fine-tuning then LoRA, twice: in one process the second seed of each would read less (or more).
    With progress bars, one over the grid (runs done, elapsed<ETA) and each worker's own on the line below."""
    args = [
        "run",
        "--model",
        str(tiny_model),
        "--methods",
        "full,lora",
        "--seeds",
        "0,1",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert cli.main(args + [a for a in QUICK if a != "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert re.search(r"grid: +50%.*\| 2/4 \[\d\d:\d\d<\d\d:\d\d", err), err  # an ETA once a run finished
    assert re.search(r"grid: 100%.*\| 4/4 ", err), err
    # the worker's bar: a line down, drawn, then the cursor back up to the grid's line
    assert re.search(r"\n\r\[4/4\] lora__seed1 epoch 1/1: [^\n]*\x1b\[A", err), err
    for method in ("full", "lora"):
        first, second = (_result(tmp_path, f"{method}__seed{s}") for s in (0, 1))
        assert first["peak_memory_mb"] > 0 and (
            "VmHWM" in first["peak_memory_method"] or "cuda" in first["peak_memory_method"]
        )
        assert 0.0 <= first["cpu_busy_elsewhere"] <= 1.0  # each worker measured who else used its cores
        assert abs(first["peak_memory_mb"] - second["peak_memory_mb"]) <= 0.1 * first["peak_memory_mb"], (
            first["peak_memory_mb"],
            second["peak_memory_mb"],
        )


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker process through /proc (Linux)")
def test_a_killed_worker_fails_its_run_only_and_a_rerun_trains_just_that_run(tiny_model, tmp_path):
    command = [
        sys.executable,
        "-m",
        "peftbench.cli",
        "run",
        "--model",
        str(tiny_model),
        "--methods",
        "lora,bitfit",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        *QUICK,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    grid = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.monotonic() + 120, None
    while killed is None and time.monotonic() < deadline and grid.poll() is None:
        workers = worker_children(grid.pid)
        if workers:
            time.sleep(0.5)  # let it get under way
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.05)
    out, err = grid.communicate(timeout=300)
    assert killed is not None, err
    assert grid.returncode == 1, err  # 1: a run failed
    failed = list((tmp_path / "failed").glob("*.json"))
    assert len(failed) == 1, err
    record = json.loads(failed[0].read_text(encoding="utf-8"))
    assert record["result"]["error"] == "worker process killed by SIGKILL" and record["result"]["worker_died"]
    finished = list((tmp_path / "runs").glob("*.json"))
    assert len(finished) == 1 and finished[0].name != failed[0].name  # the other run went on and finished
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "1 run(s) done, 1 skipped" in again.stdout
    assert not list((tmp_path / "failed").glob("*.json")) and len(list((tmp_path / "runs").glob("*.json"))) == 2


@dataclasses.dataclass
class NewerTrainConfig(TrainConfig):
    """TrainConfig as a later version might have it: one more protocol field, whose default is the old behaviour."""

    label_smoothing: float = documented(
        "label smoothing of the cross-entropy (0: none, what earlier versions did)", default=0.0
    )


def _v1_folder(tmp_path: Path, tiny_model: Path) -> Path:
    """A results folder holding the committed run written by schema version 1 (peftbench at 1bd27b8, the same
    command as V1_COMMAND), with its model path pointed at this session's copy of the same tiny model."""
    record = json.loads(FIXTURE_V1.read_text(encoding="utf-8"))
    assert record["schema_version"] == 1 and "execution" not in record["config"]["train"]
    record["config"]["model"] = str(tiny_model)
    (tmp_path / "runs").mkdir(parents=True)
    (tmp_path / "runs" / FIXTURE_V1.name).write_text(json.dumps(record), encoding="utf-8")
    return tmp_path


V1_COMMAND = ["--methods", "lora", "--epochs", "1"]


def test_a_version_1_run_is_resumed_after_a_new_field_is_added(tiny_model, tmp_path, monkeypatch, capsys):
    out = _v1_folder(tmp_path, tiny_model)
    monkeypatch.setattr(cli, "TrainConfig", NewerTrainConfig)  # its option
    monkeypatch.setattr(build, "TrainConfig", NewerTrainConfig)  # the grid's section
    assert cli.main(["run", "--model", str(tiny_model), *V1_COMMAND, "--out", str(out), *QUICK]) == 0
    assert "0 run(s) done, 1 skipped" in capsys.readouterr().out
    assert "| lora |" in (out / "report.md").read_text(encoding="utf-8")
    # what the experiment is still counts: another protocol is refused, naming what differs
    code = cli.main(
        ["run", "--model", str(tiny_model), "--methods", "lora", "--epochs", "2", "--out", str(out), *QUICK]
    )
    assert code == 2 and "train.epochs: 1 → 2" in capsys.readouterr().err


def test_extending_a_folder_with_another_execution_says_so_in_the_report(tiny_model, tmp_path, capsys):
    out = _v1_folder(tmp_path, tiny_model)  # its lora run: the fast execution, version 1's default
    args = ["run", "--model", str(tiny_model), "--methods", "lora,bitfit", "--epochs", "1", "--workers", "inline"]
    assert cli.main(args + ["--out", str(out), *QUICK]) == 0  # the seed preset now runs the reference execution
    assert "1 run(s) done, 1 skipped" in capsys.readouterr().out
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "executions differ between these runs (fast, " in report and "reference, fp32 ×1" in report


def test_data_edited_in_place_is_not_taken_for_the_old_data(tiny_model, tmp_path, capsys):
    data = tmp_path / "reviews.csv"
    rows = ["label,review"] + [f"{i % 2},{'好' if i % 2 else '差'}评 {i}" for i in range(80)]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = [
        "run",
        "--model",
        str(tiny_model),
        "--data",
        str(data),
        "--methods",
        "bitfit",
        "--epochs",
        "1",
        "--workers",
        "inline",
    ]
    assert cli.main(args + ["--out", str(tmp_path / "out"), *QUICK]) == 0
    data.write_text("\n".join(rows[:-1] + ["1,改过的一行"]) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert cli.main(args + ["--out", str(tmp_path / "out"), *QUICK]) == 2
    assert "data.sha256" in capsys.readouterr().err

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftbench.config.sections import TrainConfig, as_dict
from peftbench.files import write_atomic
from peftbench.models import classifier as models
from peftbench.reporting.markdown import execution_lines
from peftbench.run.measure import PeakMemory
from peftbench.store.identity import fingerprint, protocol_differences
from peftbench.store.provenance import git_state
from peftbench.store.runs import ResultStore
from peftbench.store.schema import RunConfig, RunRecord, parse, read_record


def test_peak_memory_sees_a_temporary_allocation_and_resets():
    meter = PeakMemory(torch.device("cpu"))
    meter.start()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del block
    assert 50 < meter.peak_mb() < 200
    meter.start()
    if "VmHWM" in meter.method:  # resettable here: the earlier peak no longer counts
        assert meter.peak_mb() < 30


# On one core (the least busy of those allowed: a job pinned to another keeps out of the way): spin for 1.5 s,
# then sleep 1.5 s while a process that is not (yet) a waited child spins there.
_SHARED_CORE = """
import os, subprocess, sys, time
import psutil
from peftbench.run.measure import CpuLoad
percent = psutil.cpu_percent(interval=0.5, percpu=True)
os.sched_setaffinity(0, {min(os.sched_getaffinity(0), key=lambda cpu: percent[cpu])})
def measured(work):
    load = CpuLoad()
    load.start()
    work()
    return load.busy_elsewhere()
def spin():
    end = time.perf_counter() + 1.5
    while time.perf_counter() < end:
        pass
quiet = measured(spin)
burn = "import time\\nend = time.perf_counter() + 3\\nwhile time.perf_counter() < end: pass"
burner = subprocess.Popen([sys.executable, "-c", burn])
time.sleep(0.3)  # the interpreter starting
busy = measured(lambda: time.sleep(1.5))
burner.kill()
print(quiet, busy)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins a core (Linux)")
def test_cpu_load_counts_other_processes_on_its_cores_and_not_its_own_work():
    shown = subprocess.run([sys.executable, "-c", _SHARED_CORE], capture_output=True, text=True, check=True).stdout
    quiet, busy = map(float, shown.split())
    # its own spinning is not "elsewhere"; another process spinning on its core while it sleeps is, nearly all
    # of it (margins for whatever else this machine runs on that core meanwhile)
    assert quiet < 0.3 and busy > 0.6 and busy > quiet + 0.3, (quiet, busy)


def test_a_report_says_when_other_processes_shared_a_runs_cpu():
    template = json.loads((Path(__file__).parent / "fixtures" / "schema1" / "lora__seed123.json").read_text())

    def record(share):
        return read_record({**template, "result": {**template["result"], "cpu_busy_elsewhere": share}})

    assert not any("shared CPU" in line for line in execution_lines([record(0.03), record(None)]))
    lines = execution_lines([record(0.03), record(0.52), record(0.21)])
    assert "shared CPU: other processes used 20% or more of the CPU cores of 2 of 3 runs (up to 52%)" in "\n".join(
        lines
    )


def test_atomic_write_replaces_whole_files_only(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_atomic(path, "first")
    write_atomic(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def _config(**train):
    return parse(RunConfig, _config_data(**train))


def _config_data(**train):
    return {
        "model": "m",
        "method": "lora",
        "method_hyperparameters": {"r": 8},
        "peft_config_class": "LoraConfig",
        "lr": 1e-3,
        "preset": "seed",
        "data": {"source": "a.csv", "max_length": 86, "sha256": "abc"},
        "train": {**as_dict(TrainConfig(seed=1)), **train},
    }


def _record(method, status, **train):
    config = parse(RunConfig, {**_config_data(**train), "method": method})
    return read_record(
        {
            "schema_version": 2,
            "run_id": f"{method}__seed1",
            "config": config.to_dict(),
            "config_fingerprint": fingerprint(config),
            "data": {"source": "a.csv"},
            "result": {"status": status},
        }
    )


def _stored(config: RunConfig) -> RunRecord:
    """A stored run of this config, as protocol_differences compares it."""
    stored = {"run_id": "r", "config": config.to_dict(), "config_fingerprint": "", "data": {"source": "a.csv"}}
    return read_record({**stored, "schema_version": 2, "result": {"status": "ok"}})


def test_store_keeps_failures_apart_and_skips_unreadable_runs(tmp_path):
    store = ResultStore(tmp_path)
    store.save(_record("lora", "failed"))
    assert (tmp_path / "failed" / "lora__seed1.json").exists()
    assert store.finished("lora__seed1") is None  # a failure is run again
    store.save(_record("lora", "ok"))
    assert not (tmp_path / "failed" / "lora__seed1.json").exists()
    assert store.finished("lora__seed1").status == "ok"
    (tmp_path / "runs" / "full__seed1.json").write_text("{ half a fi", encoding="utf-8")
    assert store.finished("full__seed1") is None
    assert [r.run_id for r in store.records()] == ["lora__seed1"]


def test_identity_is_the_experiment_not_how_it_was_executed():
    base = _config()
    fast = _config(execution="fast", precision="bf16", group_by_length=True, eval_batch_size=256)
    assert fingerprint(base) == fingerprint(fast)
    assert protocol_differences(_stored(base), fast) == []
    for changed in (
        _config(epochs=4),
        dataclasses.replace(base, lr=2e-3),
        dataclasses.replace(base, data={**base.data, "sha256": "abd"}),
        dataclasses.replace(base, model_identity={"config_sha256": "x", "weights": {"model.safetensors": 10}}),
    ):
        assert fingerprint(changed) != fingerprint(base)
    differences = protocol_differences(_stored(base), _config(epochs=4))
    assert differences == ["train.epochs: 3 → 4"]


def test_a_field_added_later_with_its_old_behaviour_as_default_keeps_old_runs_valid():
    @dataclasses.dataclass
    class NewerTrainConfig(TrainConfig):
        label_smoothing: float = 0.0  # 0: what every version without the field did

    old = _config()  # written before the field existed: no label_smoothing in it
    new = dataclasses.replace(old, train=as_dict(NewerTrainConfig(seed=1)))
    assert "label_smoothing" in new.train and "label_smoothing" not in old.train
    assert protocol_differences(_stored(old), new, NewerTrainConfig) == []
    smoothed = dataclasses.replace(old, train=as_dict(NewerTrainConfig(seed=1, label_smoothing=0.1)))
    assert protocol_differences(_stored(old), smoothed, NewerTrainConfig) == ["train.label_smoothing: 0.0 → 0.1"]


def test_model_identity_changes_when_the_folder_is_edited_in_place(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 32}', encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    before = models.identity(str(tmp_path))
    assert before == models.identity(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"x" * 101)
    assert models.identity(str(tmp_path)) != before
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "config.json").write_text('{"hidden_size": 64}', encoding="utf-8")
    assert models.identity(str(tmp_path)) != before


def test_git_state_counts_edited_tracked_files_not_untracked_output(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    assert git_state(tmp_path) == (None, None)
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "first")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}")  # a run's output inside the clone
    assert git_state(tmp_path) == (commit, False)
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (commit, True)

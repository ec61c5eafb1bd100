import json

import pytest
import torch

from peftbench.errors import UserError
from peftbench.measure import PeakMemory
from peftbench.results import ResultStore, write_atomic


def test_peak_memory_sees_a_temporary_allocation_and_resets():
    meter = PeakMemory(torch.device("cpu"))
    meter.start()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del block
    assert 50 < meter.peak_mb() < 200
    meter.start()
    if "VmHWM" in meter.method:  # resettable here: the earlier peak no longer counts
        assert meter.peak_mb() < 30


def test_atomic_write_replaces_whole_files_only(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_atomic(path, "first")
    write_atomic(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def _record(method, status, epochs=3):
    config = {"method": method, "model": "m", "lr": 1e-3, "train": {"seed": 1, "epochs": epochs}}
    return {"schema_version": 1, "run_id": f"{method}__seed1", "config": config, "config_fingerprint": str(epochs), "result": {"status": status}}


def test_store_keeps_failures_apart_and_checks_settings(tmp_path):
    store = ResultStore(tmp_path)
    store.save(_record("lora", "failed"))
    assert (tmp_path / "failed" / "lora__seed1.json").exists()
    assert store.finished("lora__seed1", "3") is None  # a failure is run again
    store.save(_record("lora", "ok"))
    assert not (tmp_path / "failed" / "lora__seed1.json").exists()
    assert store.finished("lora__seed1", "3")["result"]["status"] == "ok"
    with pytest.raises(UserError, match="different settings"):
        store.finished("lora__seed1", "4")
    (tmp_path / "runs" / "full__seed1.json").write_text("{ half a fi", encoding="utf-8")
    assert store.finished("full__seed1", "3") is None
    assert [r["run_id"] for r in store.records()] == ["lora__seed1"]
    assert json.loads((tmp_path / "runs" / "lora__seed1.json").read_text())["result"]["status"] == "ok"

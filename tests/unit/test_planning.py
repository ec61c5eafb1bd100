"""runner/planning.py: every run of a grid once, in a deterministic order, cut into shards, and what is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.config.sections import DataConfig, GridConfig, ScaleConfig, TrainConfig
from peftbench.errors import UserError
from peftbench.runner import planning
from peftbench.store.runs import ResultStore
from peftbench.store.schema import read_record

PREPARED = planning.Prepared(
    "model", 32, "sha", {"config_sha256": "c", "weights": {"model.safetensors": 2**20}}, None, None
)  # type: ignore[arg-type]


def _grid(tmp_path: Path, **scale: object) -> GridConfig:
    return GridConfig(
        "m", ["lora", "bitfit"], tmp_path, DataConfig(), TrainConfig(), seeds=[0, 1], scale=ScaleConfig(**scale)
    )


def test_the_plan_is_every_method_for_every_seed_with_its_identity(tmp_path: Path) -> None:
    planned = planning.plan(_grid(tmp_path), PREPARED)
    assert [r.run_id for r in planned] == ["lora__seed0", "bitfit__seed0", "lora__seed1", "bitfit__seed1"]
    assert len({r.fingerprint for r in planned}) == 4  # seeds and methods are other experiments
    assert planned[0].train.seed == 0 and planned[0].config.data["max_length"] == 32
    assert planned[0].lr == 3e-4 and planned[0].learning_rates() == [3e-4]
    again = planning.plan(_grid(tmp_path), PREPARED)
    assert [r.fingerprint for r in again] == [r.fingerprint for r in planned]  # the same grid: the same identities


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_shards_are_disjoint_and_cover_the_plan(tmp_path: Path, count: int) -> None:
    planned = planning.plan(_grid(tmp_path), PREPARED)
    parts = [planning.shard(_grid(tmp_path, shard=f"{i}/{count}"), planned) for i in range(1, count + 1)]
    ids = [run.run_id for part in parts for run in part]
    assert sorted(ids) == sorted(r.run_id for r in planned) and len(ids) == len(set(ids))
    assert planning.shard(_grid(tmp_path), planned) == planned  # no --shard: the whole grid


def test_shard_one_of_two_takes_every_other_run(tmp_path: Path) -> None:
    planned = planning.plan(_grid(tmp_path), PREPARED)
    first = planning.shard(_grid(tmp_path, shard="1/2"), planned)
    assert [r.run_id for r in first] == ["lora__seed0", "lora__seed1"]


def test_todo_leaves_out_finished_runs_and_refuses_other_settings(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    planned = planning.plan(grid, PREPARED)
    store = ResultStore(tmp_path)
    run = planned[0]
    stored = {"run_id": run.run_id, "config": run.config.to_dict(), "config_fingerprint": run.fingerprint}
    store.save(read_record({**stored, "schema_version": 2, "data": {"source": "d"}, "result": {"status": "ok"}}))
    assert [r.run_id for r in planning.todo(grid, planned, store)] == ["bitfit__seed0", "lora__seed1", "bitfit__seed1"]
    other = GridConfig("m", ["lora"], tmp_path, DataConfig(), TrainConfig(epochs=2), seeds=[0])
    with pytest.raises(UserError, match=r"different settings \(train.epochs: 3 → 2\)"):
        planning.todo(other, planning.plan(other, PREPARED), store)

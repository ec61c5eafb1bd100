"""config/values.py and config/sections.py: values parsed once into the config's types, choices from the
annotations, and validate() that checks without changing anything."""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

import pytest

from peftbench.config.sections import DataConfig, GridConfig, ScaleConfig, TrainConfig
from peftbench.config.values import Shard, choices, from_text, metavar
from peftbench.errors import UserError
from peftbench.runner.build import build_grid


def test_text_is_parsed_into_the_fields_types() -> None:
    train = TrainConfig(lr_grid="1e-3, 3e-3", epochs="2", group_by_length="off")  # type: ignore[arg-type]
    assert train.lr_grid == (1e-3, 3e-3) and train.epochs == 2 and train.group_by_length is False
    assert train.learning_rates() == [1e-3, 3e-3]
    assert TrainConfig(lr_grid=[1e-3]).lr_grid == (1e-3,)  # type: ignore[arg-type]
    assert DataConfig(max_length="auto").max_length == "auto" and DataConfig(max_length="64").max_length == 64  # type: ignore[arg-type]
    scale = ScaleConfig(workers="2", shard="2/3")  # type: ignore[arg-type]
    assert scale.workers == 2 and scale.shard == Shard(2, 3) and not scale.inline
    assert ScaleConfig(workers="inline").inline and ScaleConfig(workers="process").workers == 1  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainConfig(lr_grid="1e-3,x"), "--lr-grid: expected comma-separated numbers"),
        (lambda: ScaleConfig(shard="3/2"), "--shard: --shard I/N needs 1 <= I <= N"),
        (lambda: ScaleConfig(shard="0/2"), "--shard: --shard I/N needs 1 <= I <= N"),
        (lambda: ScaleConfig(shard="x"), "--shard: expected I/N"),
        (lambda: ScaleConfig(workers="many"), "--workers: expected an integer or one of inline, got 'many'"),
        (lambda: DataConfig(max_length="long"), "--max-length: expected an integer or one of auto, got 'long'"),
        (lambda: TrainConfig(attention="flash"), "--attention: expected one of auto, sdpa, eager"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_option(build, message) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        build()


def test_choices_and_metavars_come_from_the_annotations() -> None:
    hints = typing.get_type_hints(TrainConfig)
    assert choices(hints["attention"]) == ("auto", "sdpa", "eager") and choices(hints["epochs"]) is None
    assert metavar(hints["attention"]) == "{auto,sdpa,eager}" and metavar(hints["lr_grid"]) == "A,B,..."
    scale, data = typing.get_type_hints(ScaleConfig), typing.get_type_hints(DataConfig)
    assert metavar(scale["workers"]) == "N|inline" and metavar(scale["shard"]) == "I/N"
    assert metavar(data["max_length"]) == "N|auto" and metavar(data["text_column"]) is None
    assert from_text(int | None, "3") == 3 and from_text(bool, "ON") is True


def test_validate_checks_and_changes_nothing(tmp_path: Path) -> None:
    grid = build_grid("m", "seed", tmp_path, preset="tuned", train={"lr_grid": "1e-3,3e-3"}, report_to="tensorboard")
    before = copy.deepcopy(grid)
    grid.validate()
    assert grid == before
    bad = dataclasses.replace(grid, train=dataclasses.replace(grid.train, epochs=0))
    with pytest.raises(UserError, match="--epochs must be at least 1"):
        bad.validate()


def test_a_list_of_trackers_from_the_api_is_checked_item_by_item(tmp_path: Path) -> None:
    grid = GridConfig("m", ["lora"], tmp_path, DataConfig(), TrainConfig(), report_to=["tensorboard", "wandb"])  # type: ignore[arg-type]
    assert grid.report_to == ("tensorboard", "wandb")  # a list is taken as given, and checked by validate
    with pytest.raises(UserError, match="--report-to: expected one of tensorboard, mlflow, trackio, got 'wandb'"):
        grid.validate()


def test_one_builder_for_the_cli_the_api_and_config_files(tmp_path: Path) -> None:
    grid = build_grid("m", "lora,seed", tmp_path, preset="demo", data={"max_train_samples": "64"}, seeds="2,1,2")
    assert grid.methods == ["lora", "full", "prefix-tuning", "prompt-tuning", "p-tuning"]
    assert grid.seeds == [2, 1] and grid.data.max_train_samples == 64 and grid.data.max_length == 64
    assert grid.train.batch_size == 16 and grid.report_to == ()
    with pytest.raises(UserError, match="train has no field 'epoch'"):
        build_grid("m", "lora", tmp_path, train={"epoch": 1})
    with pytest.raises(UserError, match="unknown preset"):
        build_grid("m", "lora", tmp_path, preset="fast")
    assert isinstance(GridConfig("m", ["lora"], "o", DataConfig(), TrainConfig()).out, Path)  # type: ignore[arg-type]


def test_the_evaluation_batch_fits_the_device():
    from peftbench.config.sections import TrainConfig

    fast = TrainConfig(batch_size=64, execution="fast")
    assert fast.eval_batch() == 64 and fast.eval_batch(on_gpu=True) == 256  # a CPU's caches; a GPU's width
    assert TrainConfig(batch_size=8, execution="fast").eval_batch() == 32
    assert TrainConfig(batch_size=64, execution="reference").eval_batch(on_gpu=True) == 64
    assert TrainConfig(batch_size=64, execution="fast", eval_batch_size=200).eval_batch() == 200

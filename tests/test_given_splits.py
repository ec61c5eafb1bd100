"""--dev-data and --test-data: a benchmark's own splits are used as shipped, labels numbered with --data's, what is
missing held out of --data; a run records the files and its identity their bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.cli import main
from peftbench.config.sections import DataConfig
from peftbench.data import load_split
from peftbench.errors import UserError


def _write(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return str(path)


def _rows(prefix: str, n: int, labels: tuple[str, ...] = ("neg", "pos")) -> list[tuple[str, str]]:
    return [(f"{prefix} text {i}", labels[i % len(labels)]) for i in range(n)]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    return {
        "train": _write(tmp_path / "train.tsv", _rows("train", 100)),
        "dev": _write(tmp_path / "dev.tsv", _rows("dev", 20)),
        "test": _write(
            tmp_path / "test.tsv", _rows("test", 30, ("pos",))
        ),  # one class only: still numbered as --data's
    }


def _config(files: dict[str, str], **kw) -> DataConfig:
    return DataConfig(source=files["train"], text_column="sentence", **kw)


def test_both_given_files_are_the_dev_and_test_sets_as_shipped(files):
    parts = load_split(_config(files, dev_data=files["dev"], test_data=files["test"], dev_size=0.1))
    assert parts.train.texts == [t for t, _ in _rows("train", 100)]  # nothing held out of --data
    assert parts.eval.texts == [t for t, _ in _rows("dev", 20)] and parts.eval.source == files["dev"]
    assert parts.test is not None and parts.test.texts == [t for t, _ in _rows("test", 30)]
    assert parts.train.label_names == ["neg", "pos"] and set(parts.test.labels) == {1}
    assert set(parts.given) == {"dev", "test"} and parts.given["test"] != parts.given["dev"]


def test_a_given_test_file_leaves_dev_to_be_held_out_of_the_training_data(files):
    parts = load_split(_config(files, test_data=files["test"], dev_size=0.2))
    assert len(parts.train.texts) == 80 and len(parts.eval.texts) == 20 and parts.eval.labels.count(0) == 10
    assert not set(parts.eval.texts) & set(parts.train.texts) and all(t.startswith("train") for t in parts.eval.texts)
    assert parts.test is not None and len(parts.test.texts) == 30 and set(parts.given) == {"test"}
    without_dev = load_split(_config(files, test_data=files["test"]))  # evaluated after each epoch, as the reference
    assert len(without_dev.train.texts) == 100 and without_dev.test is None and len(without_dev.eval.texts) == 30


def test_a_given_dev_file_leaves_test_to_be_held_out_of_the_training_data(files):
    parts = load_split(_config(files, dev_data=files["dev"], test_size=0.3, max_eval_samples=5))
    assert len(parts.train.texts) == 70 and parts.test is not None and len(parts.test.texts) == 5
    assert all(t.startswith("train") for t in parts.test.texts) and len(parts.eval.texts) == 5


def test_a_class_the_training_data_never_has_is_refused(files, tmp_path):
    odd = _write(tmp_path / "odd.tsv", _rows("odd", 10, ("neg", "pos", "neutral")))
    with pytest.raises(UserError, match="neutral never occur in the training data"):
        load_split(_config(files, test_data=odd))


def test_a_run_on_given_splits_says_so_and_its_identity_is_their_bytes(tiny_model, files, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--model", str(tiny_model), "--preset", "tuned", "--methods", "lora", "--data", files["train"]]
    args += ["--text-column", "sentence", "--dev-data", files["dev"], "--test-data", files["test"], "--out", str(out)]
    args += ["--epochs", "1", "--batch-size", "16", "--max-length", "16", "--workers", "inline", "--no-progress"]
    assert main(args) == 0
    run = json.loads((out / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))
    assert run["data"]["test_examples"] == 30 and run["data"]["dev_examples"] == 20
    assert run["data"]["test_source"] == files["test"] and run["result"]["majority_accuracy"] == 1.0
    assert f"the test set {files['test']}, as shipped" in (out / "report.md").read_text(encoding="utf-8")
    assert "test set from" in capsys.readouterr().err
    _write(Path(files["test"]), _rows("test", 30))  # other bytes under the same name: another experiment
    assert main(args) == 2
    assert "given_sha256" in capsys.readouterr().err


def _saved(folder: Path, splits: dict[str, int], hidden: tuple[str, ...] = ()) -> str:
    """A DatasetDict saved by datasets, as the hub's benchmarks come: n rows per split; hidden splits' labels -1."""
    from datasets import ClassLabel, Dataset, DatasetDict

    label = ClassLabel(names=["neg", "pos"])
    parts = {}
    for name, n in splits.items():
        labels = [-1 if name in hidden else i % 2 for i in range(n)]
        parts[name] = Dataset.from_dict({"sentence": [f"{name} {i}" for i in range(n)], "label": labels})
        parts[name] = parts[name].cast_column("label", label)
    DatasetDict(parts).save_to_disk(str(folder))
    return str(folder)


def test_a_saved_datasetdict_brings_its_own_splits_and_hidden_labels_are_left_out(tmp_path):
    glue = _saved(tmp_path / "glue", {"train": 100, "validation": 20, "test": 30}, hidden=("test",))
    parts = load_split(DataConfig(source=glue, text_column="sentence", test_size=0.2))
    assert parts.eval.texts == [f"validation {i}" for i in range(20)]  # its validation split is the dev set
    assert parts.test is not None and len(parts.test.texts) == 20 and len(parts.train.texts) == 80  # test held out
    assert all(t.startswith("train") for t in parts.test.texts) and set(parts.given) == {"dev"}
    labelled = _saved(tmp_path / "labelled", {"train": 100, "validation": 20, "test": 30})
    parts = load_split(DataConfig(source=labelled, text_column="sentence", dev_size=0.1))
    assert len(parts.train.texts) == 100 and parts.test is not None and parts.test.source.endswith("(test split)")
    assert set(parts.given) == {"dev", "test"} and parts.train.label_names == ["neg", "pos"]

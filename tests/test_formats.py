"""Data as users have it (Parquet, a saved `datasets` folder, string labels of several classes, text pairs,
--max-length auto) and config files (run --config, DIR/config.yaml). The GBK case is in test_faults.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from peftbench import cli
from peftbench.config.sections import DataConfig
from peftbench.data import length_keeping, load_labeled_texts, split, tokenize
from peftbench.models.classifier import load_tokenizer

QUICK = [
    "--max-train-samples",
    "48",
    "--max-eval-samples",
    "24",
    "--batch-size",
    "16",
    "--epochs",
    "1",
    "--no-progress",
    "--workers",
    "inline",
]
NLI = [  # premise, hypothesis, label: a 3-class text-pair task with string labels
    ("房间很干净，服务很好", "这家酒店不错", "entailment"),
    ("房间很干净，服务很好", "这家酒店很脏", "contradiction"),
    ("房间很干净，服务很好", "酒店在市中心", "neutral"),
    ("早餐太差了，不会再来", "早餐让人失望", "entailment"),
    ("早餐太差了，不会再来", "早餐很好吃", "contradiction"),
    ("早餐太差了，不会再来", "酒店有游泳池", "neutral"),
]


def _runs(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "runs").glob("*.json"))}


def _reviews(rows: int = 80) -> pd.DataFrame:
    data = load_labeled_texts(DataConfig())  # sorted by label: rows from both ends hold both classes
    texts, labels = (
        data.texts[: rows // 2] + data.texts[-rows // 2 :],
        data.labels[: rows // 2] + data.labels[-rows // 2 :],
    )
    return pd.DataFrame({"review": texts, "label": labels})


def _parquet(folder: Path) -> Path:
    path = folder / "reviews.parquet"
    _reviews().to_parquet(path)
    return path


def _saved_dataset(folder: Path) -> Path:
    from datasets import ClassLabel, Dataset, DatasetDict

    table = Dataset.from_pandas(_reviews()).cast_column("label", ClassLabel(names=["negative", "positive"]))
    parts = table.train_test_split(test_size=0.25, seed=0)  # a DatasetDict, as most saved datasets are
    DatasetDict(parts).save_to_disk(str(folder / "saved"))
    return folder / "saved"


@pytest.mark.parametrize("make", [_parquet, _saved_dataset], ids=["parquet", "datasets-folder"])
def test_a_parquet_file_and_a_saved_datasets_folder_run_end_to_end(tiny_model, tmp_path, make):
    source = make(tmp_path)
    out = tmp_path / "out"
    assert (
        cli.main(
            ["run", "--model", str(tiny_model), "--data", str(source), "--methods", "bitfit", "--out", str(out), *QUICK]
        )
        == 0
    )
    record = _runs(out)["bitfit__seed123"]
    assert record["result"]["status"] in ("ok", "collapsed")
    if make is _saved_dataset:  # its own splits, as shipped: 60 to train on, its test split of 20 to judge on
        assert record["data"]["rows_read"] == 60 and record["data"]["eval_examples"] == 20
        assert record["data"]["test_source"] == f"{source} (test split)"
    else:
        assert record["data"]["rows_read"] == 80
    expected = ["negative", "positive"] if make is _saved_dataset else ["0", "1"]  # ClassLabel names travel
    assert record["data"]["label_names"] == expected
    share = record["data"]["truncated_share"]
    assert set(share) == {"train", "eval"} and 0.0 < share["train"] < 1.0  # reviews are longer than 86 tokens at times
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"truncates {share['train']:.1%} of train, {share['eval']:.1%} of eval" in report


def test_string_labels_of_three_classes_and_text_pairs_end_to_end(tiny_model, tmp_path):
    source = tmp_path / "nli.jsonl"
    rows = [{"premise": p, "hypothesis": h, "label": y} for _ in range(10) for p, h, y in NLI]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    args = [
        "--data",
        source,
        "--text-column",
        "premise",
        "--text-pair-column",
        "hypothesis",
        "--methods",
        "lora",
        "--preset",
        "tuned",
    ]
    assert cli.main(["run", "--model", str(tiny_model), "--out", str(out), *map(str, args), *QUICK]) == 0
    record = _runs(out)["lora__seed123"]
    assert record["data"]["label_names"] == ["contradiction", "entailment", "neutral"] and record["data"]["text_pair"]
    assert set(record["result"]["references"]) == {0, 1, 2} and 0.0 <= record["result"]["f1_macro"] <= 1.0
    with (out / "results.csv").open(encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["f1_macro"]) == pytest.approx(record["result"]["f1_macro"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "classes contradiction, entailment, neutral" in report and "(text pairs)" in report


def test_pairs_are_encoded_as_pairs(tiny_model, tmp_path):
    source = tmp_path / "pairs.csv"
    pd.DataFrame([{"a": p, "b": h, "label": y} for p, h, y in NLI]).to_csv(source, index=False)
    config = DataConfig(source=str(source), text_column="a", text_pair_column="b", max_train_samples=None)
    parts = split(load_labeled_texts(config), config)
    example = tokenize(load_tokenizer(str(tiny_model)), parts.train, 64)[0]
    assert example["input_ids"].count(3) == 2 and 1 in example["token_type_ids"]  # [SEP] after each text, segment B


def test_max_length_auto_keeps_the_stated_share_whole(tiny_model, tmp_path):
    assert length_keeping([5, 1, 3, 9, 7], 0.6) == 5 and length_keeping([5, 1, 3, 9, 7], 1.0) == 9
    out = tmp_path / "out"
    args = ["run", "--model", str(tiny_model), "--methods", "bitfit", "--out", str(out), "--dry-run", *QUICK]
    assert cli.main([*args, "--max-length", "auto", "--max-length-keep", "0.5"]) == 0
    data = _runs(out)["bitfit__seed123"]["data"]
    assert data["max_length"] < 128 and data["truncated_share"]["train"] <= 0.5
    assert "auto: the shortest that keeps 50% of training texts whole" in (out / "report.md").read_text(
        encoding="utf-8"
    )


# --- config files --------------------------------------------------------------------------------------


def test_a_written_config_runs_the_same_grid_again(tiny_model, tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        f"model: {tiny_model}\nmethods: [lora, bitfit]\npreset: tuned\nseeds: [0, 1]\nmax_train_samples: 48\n"
        "max-eval-samples: 24\nepochs: 1\nlr_grid: 1e-3,3e-3\ndry_run: true\nworkers: inline\n",
        encoding="utf-8",
    )
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.main(["run", "--config", str(grid_file), "--out", str(first), "--no-progress"]) == 0
    written = first / "config.yaml"
    assert "lr-grid:\n- 0.001\n- 0.003\n" in written.read_text(encoding="utf-8")  # the rates, parsed once
    assert cli.main(["run", "--config", str(written), "--out", str(second), "--no-progress"]) == 0
    fingerprints = {name: r["config_fingerprint"] for name, r in _runs(first).items()}
    assert len(fingerprints) == 4 and fingerprints == {
        name: r["config_fingerprint"] for name, r in _runs(second).items()
    }
    # a typed option wins over the file, and makes another experiment
    third = tmp_path / "third"
    assert cli.main(["run", "--config", str(written), "--out", str(third), "--epochs", "2", "--no-progress"]) == 0
    assert all(r["config"]["train"]["epochs"] == 2 for r in _runs(third).values())
    assert not set(fingerprints.values()) & {r["config_fingerprint"] for r in _runs(third).values()}


def test_config_file_errors_are_one_line(tmp_path, capsys):
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"model": "x", "learning_rate": 1e-3}), encoding="utf-8")
    assert cli.main(["run", "--config", str(typo)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("unknown key 'learning_rate'; the keys are the options of `peftbench run` (see --help)")
    )
    listed = tmp_path / "list.yaml"
    listed.write_text("- lora\n", encoding="utf-8")
    assert cli.main(["run", "--config", str(listed)]) == 2
    assert "must hold a mapping" in capsys.readouterr().err
    assert cli.main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read --config" in capsys.readouterr().err

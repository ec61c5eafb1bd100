"""A finished run saves its weights; `peftbench predict` reproduces the predictions made during training."""

import io
import json

import pytest
from transformers import AutoTokenizer

from peftbench.cli import main
from peftbench.config.sections import DataConfig
from peftbench.data import load_labeled_texts, split

QUICK = [
    "--max-train-samples",
    "96",
    "--max-eval-samples",
    "40",
    "--batch-size",
    "16",
    "--max-length",
    "32",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    args = [
        "run",
        "--model",
        str(tiny_model),
        "--methods",
        "lora,prefix-tuning,bitfit,adalora",
        "--epochs",
        "1",
        "--lr",
        "1e-2",
        "--precision",
        "fp32",
        "--out",
        str(out),
        "--workers",
        "inline",
    ]
    assert main(args + QUICK) == 0
    return out


def _eval_texts():
    config = DataConfig(max_train_samples=96, max_eval_samples=40)
    return split(load_labeled_texts(config), config).eval.texts


@pytest.mark.parametrize("method", ["lora", "prefix-tuning", "bitfit", "adalora"])
def test_predictions_of_a_saved_run_equal_those_recorded_in_training(trained, method, capsys):
    record = json.loads((trained / "runs" / f"{method}__seed123.json").read_text(encoding="utf-8"))["result"]
    assert record["adapter_size_mb"] > 0 and (trained / record["weights_dir"] / "peftbench-run.json").exists()
    texts = _eval_texts()
    capsys.readouterr()
    assert main(["predict", "--run", str(trained / f"{method}__seed123"), *texts]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(texts)
    labels = [int(line.split("\t")[0]) for line in lines]
    assert labels == record["predictions"]
    assert all(0.5 <= float(line.split("\t")[1]) <= 1.0 for line in lines)


def test_predict_reads_files_and_stdin(trained, tmp_path, capsys, monkeypatch):
    source = tmp_path / "texts.txt"
    source.write_text("房间很干净\n\n服务太差了\n", encoding="utf-8")
    assert main(["predict", "--run", str(trained / "lora__seed123"), "--input", str(source)]) == 0
    from_file = capsys.readouterr().out.strip().splitlines()
    monkeypatch.setattr("sys.stdin", io.StringIO("房间很干净\n服务太差了\n"))
    assert main(["predict", "--run", str(trained / "lora__seed123")]) == 0
    assert capsys.readouterr().out.strip().splitlines() == from_file and len(from_file) == 2
    assert from_file[0].endswith("\t房间很干净")


def test_merged_lora_predicts_like_the_adapter(trained, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "merged"
    assert main(["predict", "--run", str(trained / "lora__seed123"), "--merge", str(out)]) == 0
    record = json.loads((trained / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(_eval_texts(), truncation=True, max_length=32, padding=True, return_tensors="pt")
    assert model(**batch).logits.argmax(-1).tolist() == record["predictions"]
    capsys.readouterr()
    assert main(["predict", "--run", str(trained / "bitfit__seed123"), "--merge", str(tmp_path / "m2")]) == 2
    assert "no adapter to merge" in capsys.readouterr().err


def test_predict_on_a_folder_that_is_no_run_is_a_user_error(tmp_path, capsys):
    assert main(["predict", "--run", str(tmp_path), "text"]) == 2
    assert "not a saved peftbench run" in capsys.readouterr().err


def test_compare_puts_runs_of_several_folders_in_one_report(trained, tmp_path, capsys):
    import csv
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(trained / "runs", other / "runs")
    assert main(["compare", str(trained), str(other), "--out", str(tmp_path / "both")]) == 0
    with open(tmp_path / "both" / "results.csv", encoding="utf-8") as handle:
        methods = [row["method"] for row in csv.DictReader(handle)]
    assert f"{trained.name}/lora" in methods and "other-model/lora" in methods and len(methods) == 8
    assert "other-model/bitfit" in (tmp_path / "both" / "report.html").read_text(encoding="utf-8")
    assert main(["compare", str(trained), "--out", str(trained)]) == 2

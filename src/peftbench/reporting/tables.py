"""results.csv, trials.csv and classes.csv: one row per run, one per learning rate tried and epoch, and one per
run and class."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from peftbench.analysis.classes import class_scores, never_predicted
from peftbench.analysis.stats import run_intervals
from peftbench.files import write_atomic
from peftbench.reporting.markdown import display_name
from peftbench.store.schema import RunRecord

CSV_COLUMNS = [
    "method",
    "seed",
    "status",
    "total_params",
    "trainable_params",
    "trainable_pct",
    "peak_memory_mb",
    "train_it_per_s",
    "eval_it_per_s",
    "train_samples_per_s",
    "cpu_busy_elsewhere",  # other processes' share of the run's CPU cores (run.measure.CpuLoad)
    "train_time_min",
    "eval_loss",
    "eval_loss_sum",
    "accuracy",
    "f1_macro",
    "majority_accuracy",
    "adapter_size_mb",
    "inference_ms_per_example",
    "inference_samples_per_s",
    "inference_batch_size",
    "inference_merged",
    "total_time_min",
    "lr",
    "chosen_lr",
    "chosen_epoch",
    "dev_accuracy",
    "epochs",
    "train_examples",
    "eval_examples",
    "model",
    "note",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "f1_macro_ci_low",
    "f1_macro_ci_high",
    "beats_majority",
    "classes_never_predicted",  # classes of the split the run predicted for no example, ";"-separated
]
# classes.csv: per run and class, on the split the run's predictions are of (analysis.classes)
CLASS_COLUMNS = ["method", "seed", "class", "support", "predicted", "correct", "recall", "precision"]
# trials.csv: one row per learning rate tried and epoch, so an lr sweep can be read without the run files
TRIAL_COLUMNS = [
    "method",
    "seed",
    "lr",
    "epoch",
    "step",
    "status",
    "train_loss",
    "dev_loss",
    "dev_accuracy",
    "dev_f1_macro",
    "chosen",
    "trial_steps",  # the optimiser steps the rate trained (its budget)
    "pruned_at_step",  # --search halving stopped the rate after this step
]


def trial_rows(record: RunRecord) -> list[dict[str, Any]]:
    result = record.result
    chosen = (result.chosen_lr, result.chosen_epoch, result.chosen_step)
    return [
        {
            "method": display_name(record),
            "seed": record.config.seed,
            "lr": trial.lr,
            "epoch": epoch.epoch,
            "step": epoch.step,
            "status": trial.status,
            "train_loss": epoch.train_loss,
            "dev_loss": epoch.eval_loss,
            "dev_accuracy": epoch.accuracy,
            "dev_f1_macro": epoch.f1_macro,
            "chosen": (trial.lr, epoch.epoch, epoch.step) == chosen,
            "trial_steps": trial.train_steps,
            "pruned_at_step": trial.pruned_at_step,
        }
        for trial in result.trials_tried()
        for epoch in trial.epochs
    ]


def csv_row(record: RunRecord) -> dict[str, Any]:
    result = record.result
    row = {key: getattr(result, key, None) for key in CSV_COLUMNS}
    row.update(
        method=display_name(record),
        seed=record.config.seed,
        lr=record.config.lr,
        epochs=record.config.train["epochs"],
        model=record.config.model,
        train_examples=record.data.train_examples,
        eval_examples=record.data.eval_examples,
        note=result.note or result.error or "",
    )
    intervals = run_intervals(record)
    for key in ("accuracy", "f1_macro"):
        low, high = intervals.get(f"{key}_ci", (None, None))
        row.update({f"{key}_ci_low": low, f"{key}_ci_high": high})
    row["beats_majority"] = intervals.get("beats_majority")
    row["classes_never_predicted"] = ";".join(c.label for c in never_predicted(record))
    return {k: ("" if v is None else v) for k, v in row.items()}


def write_csv(root: Path, records: list[RunRecord]) -> Path:
    return _write_table(root / "results.csv", CSV_COLUMNS, [csv_row(r) for r in records])


def class_rows(record: RunRecord) -> list[dict[str, Any]]:
    return [
        {
            "method": display_name(record),
            "seed": record.config.seed,
            "class": c.label,
            "support": c.support,
            "predicted": c.predicted,
            "correct": c.correct,
            "recall": c.recall,
            "precision": c.precision,
        }
        for c in class_scores(record)
    ]


def write_classes_csv(root: Path, records: list[RunRecord]) -> Path | None:
    """classes.csv when some run stored its predictions with the true labels; else None."""
    return _write_rows_if_any(root / "classes.csv", CLASS_COLUMNS, [r for x in records for r in class_rows(x)])


def write_trials_csv(root: Path, records: list[RunRecord]) -> Path | None:
    """trials.csv when some run tried several learning rates (or was --select-only); else None."""
    return _write_rows_if_any(root / "trials.csv", TRIAL_COLUMNS, [r for x in records for r in trial_rows(x)])


def _write_rows_if_any(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path | None:
    if not rows:
        path.unlink(missing_ok=True)  # from an earlier state of the folder
        return None
    return _write_table(path, columns, rows)


def _write_table(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_atomic(path, buffer.getvalue())
    return path

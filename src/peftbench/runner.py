"""A grid: setup once (data, tokenizer, tokenised examples), then setup → train → evaluate → save per run."""

from __future__ import annotations

import dataclasses
import gc
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from . import models
from .config import GridConfig, TrainConfig, as_dict
from .data import TokenizedData, load_labeled_texts, split, tokenize_split
from .errors import UserError
from .measure import MEASUREMENT_NOTES, PeakMemory, count_parameters, device_description
from .methods import REGISTRY, Method
from .report import header_lines, render_markdown
from .report_html import render_html
from .results import SCHEMA_VERSION, ResultStore, fingerprint, provenance, run_id, write_atomic
from .hardware import resolve_attention, resolve_dropout_masks, resolve_precision
from .predict import save_trained
from .train import COLLAPSE_SHARE, TrainOutcome, evaluate_once, planned_steps, store_frozen_weights_in, train_and_evaluate

PRECISION_TO_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class PlannedRun:
    method: Method
    train: TrainConfig  # the grid's, with this run's seed
    config: dict[str, Any]
    fingerprint: str
    run_id: str


@dataclass
class GridSummary:
    ran: int
    skipped: int
    failed: int
    out_files: list[str]


def _plan(grid: GridConfig, max_length: int) -> list[PlannedRun]:
    planned = []
    for name, seed in ((n, s) for s in grid.run_seeds() for n in grid.methods):
        method = REGISTRY[name]
        train = dataclasses.replace(grid.train, seed=seed)
        config = {
            "model": grid.model,
            "method": name,
            "method_hyperparameters": method.hyperparameters,
            "peft_config_class": method.peft_config_class,
            "lr": grid.train.lr if grid.train.lr is not None else method.recommended_lr,
            "preset": grid.preset,
            "data": {**as_dict(grid.data), "max_length": max_length},
            "train": as_dict(train),
            "dry_run": grid.dry_run,
        }
        planned.append(PlannedRun(method, train, config, fingerprint(config), run_id(name, seed)))
    return planned


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_grid(grid: GridConfig, progress: bool = True) -> GridSummary:
    grid.validate()
    # Everything that can reject the input happens before the first byte is written to grid.out.
    parts = split(load_labeled_texts(grid.data), grid.data)
    model_name = models.resolve(grid.model)
    tokenizer = models.load_tokenizer(model_name)
    model_config = models.load_config(model_name)
    models.configure_padding(tokenizer, model_config.model_type)
    max_length = models.max_length_for(tokenizer, grid.data.max_length, getattr(model_config, "max_position_embeddings", None))
    store = ResultStore(grid.out)
    planned = _plan(grid, max_length)
    todo = []
    for run in planned:
        if grid.dry_run:
            if not store.has_finished(run.run_id):
                todo.append(run)
        elif store.finished(run.run_id, run.fingerprint) is None:  # raises on a finished run of other settings
            todo.append(run)
    try:
        grid.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {grid.out}: {exc.strerror}") from None

    data = tokenize_split(parts, tokenizer, max_length)
    from accelerate import Accelerator
    from transformers import DataCollatorWithPadding

    # accelerate picks the GPU when there is one; the precision must be known before it starts
    likely_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(grid.train.precision, likely_device)
    attention = resolve_attention(grid.train.attention, likely_device)
    accelerator = Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[precision])
    collator = DataCollatorWithPadding(tokenizer)
    device = device_description(accelerator.device)
    skipped = len(planned) - len(todo)
    if skipped:
        _log(f"{skipped} run(s) already finished in {grid.out}: skipped")
    failed = 0
    for index, run in enumerate(todo, start=1):
        label = f"[{index}/{len(todo)}] {run.run_id}"
        rates = grid.train.lr_grid or f"{run.config['lr']:g}"
        _log(f"{label}: {run.method.summary}; lr {rates}")
        record = _execute(run, grid, model_name, tokenizer, data, accelerator, precision, attention, collator, progress, label)
        record.update(provenance=provenance(device))
        store.save(record)
        result = record["result"]
        failed += result["status"] == "failed"
        _log(f"{label}: {_one_line_result(result)}")
        write_reports(store)
    files = write_reports(store)
    return GridSummary(ran=len(todo), skipped=skipped, failed=failed, out_files=files)


def _one_line_result(result: dict[str, Any]) -> str:
    if result["status"] == "failed":
        return f"failed: {result['error']}"
    if result["status"] == "dry_run":
        return f"{result['trainable_params']:,} of {result['total_params']:,} parameters trainable"
    accuracy = result.get("accuracy")  # absent when a run diverged before its first evaluation
    shown = "no evaluation" if accuracy is None else f"accuracy {accuracy:.4f}"
    return f"{result['status']}, {shown}, train time {result['train_time_min']:.2f} min"


def write_reports(store: ResultStore, records: list[dict[str, Any]] | None = None) -> list[str]:
    """results.csv, report.md and report.html from the store's runs (or from the records given)."""
    records = store.records() if records is None else records
    store.root.mkdir(parents=True, exist_ok=True)
    csv_path = store.write_csv(records)
    report_path = store.root / "report.md"
    notes_path = store.root / "NOTES.md"  # a hand-written note on the results, kept at the top of the report
    notes = notes_path.read_text(encoding="utf-8") if notes_path.exists() else ""
    write_atomic(report_path, render_markdown(records, notes))
    html_path = store.root / "report.html"
    write_atomic(html_path, render_html(records, header_lines(records)) if records else "<!DOCTYPE html><p>No runs yet.</p>")
    return [str(csv_path), str(report_path), str(html_path)]


def _execute(
    run: PlannedRun, grid: GridConfig, model_name: str, tokenizer: Any, data: TokenizedData,
    accelerator: Any, precision: str, attention: str, collator: Any, progress: bool, label: str,
) -> dict[str, Any]:  # fmt: skip
    from transformers import set_seed

    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "config": run.config,
        "config_fingerprint": run.fingerprint,
        "data": data.description,
        "measurement": MEASUREMENT_NOTES,
    }
    result: dict[str, Any] = {
        "majority_accuracy": data.majority_accuracy, "precision_used": precision, "attention_used": attention,
        "dropout_masks_used": resolve_dropout_masks(run.train.dropout_masks, accelerator.device),
    }  # fmt: skip
    memory = PeakMemory(accelerator.device)
    model = best_model = None
    choose_on_dev = data.test is not None
    rates = run.train.learning_rates() or [run.config["lr"]]
    try:
        memory.start()
        trials, best = [], None
        for lr in rates:
            set_seed(run.train.seed)  # the new classifier head's initial weights depend on it
            model = models.load_classifier(model_name, len(data.label_names), data.label_names, tokenizer.pad_token_id, attention)
            model = run.method.build(model, total_steps=planned_steps(len(data.train), run.train))
            total, trainable = count_parameters(model)
            result.update(total_params=total, trainable_params=trainable, trainable_pct=100.0 * trainable / total)
            if precision == "bf16" and run.train.frozen_weights_bf16:
                result["frozen_tensors_in_bf16"] = store_frozen_weights_in(model, torch.bfloat16)
            if grid.dry_run:
                result.update(status="dry_run")
                break
            trial_label = label if len(rates) == 1 else f"{label} lr {lr:g}"
            outcome = train_and_evaluate(
                model, data.train, data.eval, collator, run.train, lr, accelerator, progress, trial_label,
                keep_best=choose_on_dev, after_step=run.method.after_step,
            )  # fmt: skip
            trials.append({"lr": lr, "outcome": outcome})
            score = outcome.epochs[outcome.best_epoch - 1]["accuracy"] if outcome.best_epoch else None
            if best is None or (score is not None and (best[1] is None or score > best[1])):
                best_model, best = model, (trials[-1], score)
            model = None
        if not grid.dry_run:
            chosen = best[0]
            outcome: TrainOutcome = chosen["outcome"]
            train_time = sum(t["outcome"].train_time_s for t in trials)
            eval_time = sum(t["outcome"].eval_time_s for t in trials)
            result.update(
                status=outcome.status,
                note=outcome.note,
                chosen_lr=chosen["lr"],
                train_steps=sum(t["outcome"].train_steps for t in trials),
                train_time_s=train_time,
                eval_time_s=eval_time,
                total_time_s=train_time + eval_time,
                train_time_min=train_time / 60,
                total_time_min=(train_time + eval_time) / 60,
                train_it_per_s=outcome.train_it_per_s,
                eval_it_per_s=outcome.eval_it_per_s,
                train_samples_per_s=outcome.train_samples_per_s,
                epochs=outcome.epochs,
            )
            if len(trials) > 1:
                result["trials"] = [{"lr": t["lr"], "status": t["outcome"].status, "epochs": t["outcome"].epochs} for t in trials]
            if choose_on_dev and outcome.best_state is not None:
                # The test split is read here, once, for the setting chosen on dev.
                best_model.load_state_dict(outcome.best_state, strict=False)
                dev = outcome.epochs[outcome.best_epoch - 1]
                test = evaluate_once(best_model, data.test, collator, run.train, accelerator, progress, f"{label} test")
                result.update(predictions=test.pop("predictions"), predictions_split="test")
                result.update(chosen_epoch=outcome.best_epoch, dev_accuracy=dev["accuracy"], dev_f1_macro=dev["f1_macro"], test=test)
                result.update({k: test[k] for k in ("eval_loss", "eval_loss_sum", "accuracy", "f1_macro")})
                if test["top_predicted_class_share"] >= COLLAPSE_SHARE and result["status"] == "ok":
                    result.update(status="collapsed", note=f"{test['top_predicted_class_share']:.1%} of test predictions are one class")
            elif outcome.epochs:
                last = outcome.epochs[-1]
                result.update({k: last[k] for k in ("eval_loss", "eval_loss_sum", "accuracy", "f1_macro")})
                result.update(predictions=outcome.predictions, predictions_split="eval")
            if result["status"] in ("ok", "collapsed"):
                folder = grid.out / run.run_id
                result["adapter_size_mb"] = save_trained(accelerator.unwrap_model(best_model), tokenizer, folder, run, data, precision)
                result["weights_dir"] = run.run_id
            result.update(peak_memory_mb=memory.peak_mb(), peak_memory_method=memory.method)
    except UserError:
        raise
    except Exception as exc:  # one broken method must not stop the grid: keep the error and go on
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result.update(status="failed", error=f"{type(exc).__name__}: {message}", traceback=traceback.format_exc())
    finally:
        del model, best_model
        accelerator.free_memory()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    record["result"] = result
    return record

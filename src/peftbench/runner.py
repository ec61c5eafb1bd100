"""A grid: set up once in this process (data, tokenizer, tokenised examples), then each run in a worker
process of its own (worker.py): trials → choice on dev → one test evaluation → record → saved weights.

This process alone plans, schedules and writes the store; workers get plain data in and give plain data back,
so a scheduler can later stand where execution.run_request stands without changing any training code."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import hardware, models
from .config import GridConfig, TrainConfig, as_dict
from .data import TokenizedData, load_labeled_texts, split, tokenize_split
from .errors import UserError
from .execution import run_request
from .measure import MEASUREMENT_NOTES
from .methods import REGISTRY, Method
from .recommend import Constraints
from .report import findings, header_lines, render_markdown
from .report_html import render_html
from .results import SCHEMA_VERSION, ResultStore, fingerprint, protocol_differences, provenance, run_id, write_atomic
from .train import better_on_dev
from .worker import FINISH, TRIAL, write_tokenized


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


@dataclass
class Prepared:
    """What the grid process sets up once for every run."""

    model_path: str
    max_length: int
    data_sha256: str
    model_identity: dict[str, Any]
    parts: Any  # data.SplitTexts
    tokenizer: Any


def _prepare(grid: GridConfig) -> Prepared:
    """Everything that can reject the input, before the first byte is written to grid.out."""
    parts = split(load_labeled_texts(grid.data), grid.data)
    model_path = models.resolve(grid.model)
    tokenizer = models.load_tokenizer(model_path)
    model_config = models.load_config(model_path)
    models.configure_padding(tokenizer, model_config.model_type)
    max_length = models.max_length_for(tokenizer, grid.data.max_length, getattr(model_config, "max_position_embeddings", None))
    return Prepared(model_path, max_length, parts.train.sha256, models.identity(model_path), parts, tokenizer)


def _plan(grid: GridConfig, prepared: Prepared) -> list[PlannedRun]:
    planned = []
    for name, seed in ((n, s) for s in grid.run_seeds() for n in grid.methods):
        method = REGISTRY[name]
        train = dataclasses.replace(grid.train, seed=seed)
        config = {
            "model": grid.model,
            "model_identity": prepared.model_identity,
            "method": name,
            "method_hyperparameters": method.hyperparameters,
            "peft_config_class": method.peft_config_class,
            "lr": grid.train.lr if grid.train.lr is not None else method.recommended_lr,
            "preset": grid.preset,
            "data": {**as_dict(grid.data), "max_length": prepared.max_length, "sha256": prepared.data_sha256},
            "train": as_dict(train),
            "dry_run": grid.dry_run,
            "select_only": grid.select_only,
        }
        planned.append(PlannedRun(method, train, config, fingerprint(config), run_id(name, seed)))
    return planned


def _todo(grid: GridConfig, planned: list[PlannedRun], store: ResultStore) -> list[PlannedRun]:
    """The runs still to do; a finished run of other settings under the same name stops the grid."""
    todo = []
    for run in planned:
        done = store.finished(run.run_id)
        if done is None:
            todo.append(run)
        elif not grid.dry_run:
            differences = protocol_differences(done, run.config, type(grid.train))
            if differences:
                raise UserError(
                    f"{store.path_of(run.run_id)} holds a finished run of different settings ({'; '.join(differences[:3])}); "
                    "use another --out, or delete that file to run it again"
                )
    return todo


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def _work_folder(out: Path) -> Iterator[Path]:
    """Scratch space inside the output folder (so finished weights move in by a rename), removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix=".work-", dir=out))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_grid(grid: GridConfig, progress: bool = True) -> GridSummary:
    grid.validate()
    prepared = _prepare(grid)
    store = ResultStore(grid.out)
    planned = _plan(grid, prepared)
    todo = _todo(grid, planned, store)
    try:
        grid.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {grid.out}: {exc.strerror}") from None
    skipped = len(planned) - len(todo)
    if skipped:
        _log(f"{skipped} run(s) already finished in {grid.out}: skipped")
    failed = _run_all(grid, prepared, store, todo, progress) if todo else 0
    files = write_reports(store)
    return GridSummary(ran=len(todo), skipped=skipped, failed=failed, out_files=files)


def _run_all(grid: GridConfig, prepared: Prepared, store: ResultStore, todo: list[PlannedRun], progress: bool) -> int:
    """Tokenise once for every run, hand each run to its workers, store each record as it comes; the failures."""
    failed = 0
    with _work_folder(grid.out) as work:
        data = tokenize_split(prepared.parts, prepared.tokenizer, prepared.max_length)
        data_file = work / "data.json"
        write_tokenized(data, data_file)
        for index, run in enumerate(todo, start=1):
            label = f"[{index}/{len(todo)}] {run.run_id}"
            rates = grid.train.lr_grid or f"{run.config['lr']:g}"
            _log(f"{label}: {run.method.summary}; lr {rates}")
            record = _execute(run, _RunContext(grid, prepared, data, data_file, work / run.run_id, progress, label))
            _keep_weights(record, work / run.run_id / "weights", grid.out / run.run_id)
            store.save(record)
            failed += record["result"]["status"] == "failed"
            if progress and record["result"].get("worker_died"):
                _log("")  # a killed worker leaves its progress bar unfinished on the line
            _log(f"{label}: {_one_line_result(record['result'])}")
            _refresh_reports(store)
    return failed


def _refresh_reports(store: ResultStore) -> None:
    """The reports after each run; a report that cannot be built must not stop the grid (the run files are kept,
    and `peftbench report DIR` rebuilds the reports later)."""
    try:
        write_reports(store)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the grid's runs matter more than its interim reports
        _log(f"peftbench: could not rebuild the reports ({type(exc).__name__}: {exc}); the runs are saved")


def _keep_weights(record: dict[str, Any], staged: Path, final: Path) -> None:
    """Move a run's finished weights into place whole: a reader never sees a half-written folder."""
    if not record["result"].get("weights_dir"):
        return
    if final.exists():
        shutil.rmtree(final)  # an earlier run of this name that is being replaced
    staged.rename(final)


def _one_line_result(result: dict[str, Any]) -> str:
    if result["status"] == "failed":
        return f"failed: {result['error']}"
    if result["status"] == "dry_run":
        return f"{result['trainable_params']:,} of {result['total_params']:,} parameters trainable"
    accuracy = result.get("accuracy")  # absent when a run diverged before its first evaluation, or was --select-only
    if accuracy is not None:
        shown = f"accuracy {accuracy:.4f}"
    elif result.get("dev_accuracy") is not None:
        shown = f"dev accuracy {result['dev_accuracy']:.4f} at lr {result['chosen_lr']:g} (test not evaluated)"
    else:
        shown = "no evaluation"
    return f"{result['status']}, {shown}, train time {result['train_time_min']:.2f} min"


def write_reports(store: ResultStore, records: list[dict[str, Any]] | None = None, constraints: Constraints | None = None) -> list[str]:
    """results.csv (and trials.csv), report.md and report.html from the store's runs (or from the records given)."""
    records = store.records() if records is None else records
    store.root.mkdir(parents=True, exist_ok=True)
    csv_path = store.write_csv(records)
    trials_path = store.write_trials_csv(records)
    report_path = store.root / "report.md"
    notes_path = store.root / "NOTES.md"  # a hand-written note on how the results were made, kept in the report
    notes = notes_path.read_text(encoding="utf-8") if notes_path.exists() else ""
    found = findings(records, constraints)  # the statistics take seconds: once for both reports
    write_atomic(report_path, render_markdown(records, notes, found))
    html_path = store.root / "report.html"
    page = render_html(records, header_lines(records), found) if records else "<!DOCTYPE html><p>No runs yet.</p>"
    write_atomic(html_path, page)
    return [str(csv_path), *([str(trials_path)] if trials_path else []), str(report_path), str(html_path)]


@dataclass
class _RunContext:
    grid: GridConfig
    prepared: Prepared
    data: TokenizedData
    data_file: Path
    folder: Path  # this run's scratch folder
    progress: bool
    label: str

    def send(self, request: dict[str, Any], name: str) -> dict[str, Any]:
        """Run a worker request, its files in this run's scratch folder under `name`."""
        return run_request(request, self.folder / name, inline=self.grid.workers == "inline")


def _request(run: PlannedRun, context: _RunContext, kind: str, lr: float, **extra: Any) -> dict[str, Any]:
    """A worker request: plain data only, so that it can cross any process or machine boundary."""
    return {
        "kind": kind, "run_id": run.run_id, "method": run.method.name, "model_path": context.prepared.model_path,
        "base_model": run.config["model"], "train": run.config["train"], "lr": lr, "data_file": str(context.data_file),
        "weights_dir": str(context.folder / "weights"), "progress": context.progress, "dry_run": context.grid.dry_run,
        **extra,
    }  # fmt: skip


def _trials(run: PlannedRun, context: _RunContext) -> list[dict[str, Any]]:
    """One worker per learning rate; the only trial of a run finishes the run in its own worker."""
    rates = run.train.learning_rates() or [run.config["lr"]]
    context.folder.mkdir(parents=True, exist_ok=True)
    responses = []
    for number, lr in enumerate(rates):
        label = context.label if len(rates) == 1 else f"{context.label} lr {lr:g}"
        # a trial keeps the weights it would be judged by for a later finish; a select-only run has none
        state_file = None if context.grid.select_only else str(context.folder / f"trial{number}.safetensors")
        finish = len(rates) == 1 and not context.grid.select_only
        request = _request(run, context, TRIAL, lr, label=label, finish=finish, state_file=state_file)
        response = context.send(request, f"trial{number}")
        responses.append({"lr": lr, "state_file": state_file, **response})
        if "error" in response:
            break  # a broken method or a dead worker: the other rates would fail alike
    return responses


def _choose(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The trial whose best epoch is best on dev (better_on_dev); ties keep the first rate tried."""
    chosen, best = trials[0], None
    for trial in trials:
        outcome = trial["outcome"]
        if outcome["best_epoch"] is not None:
            metrics = outcome["epochs"][outcome["best_epoch"] - 1]
            if better_on_dev(metrics, best):
                chosen, best = trial, metrics
    return chosen


def _failed(response: dict[str, Any]) -> dict[str, Any]:
    failed = {"status": "failed", "error": response.get("error", "worker gave no result"), "traceback": response.get("traceback", "")}
    return {**failed, "worker_died": True} if response.get("worker_died") else failed


def _finish(run: PlannedRun, context: _RunContext, chosen: dict[str, Any]) -> dict[str, Any]:
    """The chosen trial's weights, tested once and saved, in a worker of their own (an lr grid's last step)."""
    request = _request(run, context, FINISH, chosen["lr"], label=context.label, state_file=chosen["state_file"], outcome=chosen["outcome"])
    return context.send(request, "finish")


def _execute(run: PlannedRun, context: _RunContext) -> dict[str, Any]:
    responses = _trials(run, context)
    result: dict[str, Any] = {"majority_accuracy": context.data.majority_accuracy}
    failure = next((t for t in responses if "error" in t), None)
    if failure is not None:
        result.update(_failed(failure))
    elif context.grid.dry_run:
        result.update(status="dry_run", **responses[0]["params"])
    else:
        trials = list(responses)
        chosen = _choose(trials)
        outcome = chosen["outcome"]
        finished = chosen.get("finish") or {"status": outcome["status"], "note": outcome["note"]}
        if "finish" not in chosen and outcome["best_epoch"] is not None and not context.grid.select_only:
            responses.append(_finish(run, context, chosen))
            finished = responses[-1].get("finish")
        result.update(_failed(responses[-1]) if finished is None else _result_of(run, context, trials, chosen, finished))
    measured = [r for r in responses if "peak_memory_mb" in r]
    if measured:  # a run's peak is the highest of its workers'
        peak = max(measured, key=lambda r: r["peak_memory_mb"])
        result.update({k: peak[k] for k in ("peak_memory_mb", "peak_memory_method", "process_peak_rss_mb") if k in peak})
    resolved = next((r["resolved"] for r in responses if "resolved" in r), {})
    result.update({k: v for k, v in resolved.items() if k != "device"})
    device = resolved.get("device") or hardware.describe(hardware.likely_device())
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "config": run.config,
        "config_fingerprint": run.fingerprint,
        "data": context.data.description,
        "measurement": MEASUREMENT_NOTES,
        "result": result,
        "provenance": provenance(device, run.train, context.grid.workers),
    }


def _result_of(run: PlannedRun, context: _RunContext, trials: list[dict[str, Any]], chosen: dict[str, Any], finished: dict[str, Any]) -> dict[str, Any]:
    """A finished run's result: what was trained (all trials), what was chosen, what the chosen weights scored."""
    outcome = chosen["outcome"]
    train_time = sum(t["outcome"]["train_time_s"] for t in trials)
    eval_time = sum(t["outcome"]["eval_time_s"] for t in trials)
    result: dict[str, Any] = {
        **chosen["params"], "status": finished["status"], "note": finished["note"], "chosen_lr": chosen["lr"],
        "train_steps": sum(t["outcome"]["train_steps"] for t in trials), "train_time_s": train_time, "eval_time_s": eval_time,
        "total_time_s": train_time + eval_time, "train_time_min": train_time / 60, "total_time_min": (train_time + eval_time) / 60,
        **{k: outcome[k] for k in ("train_it_per_s", "eval_it_per_s", "train_samples_per_s", "epochs")},
    }  # fmt: skip
    if len(trials) > 1 or context.grid.select_only:
        result["trials"] = [{"lr": t["lr"], "status": t["outcome"]["status"], "epochs": t["outcome"]["epochs"]} for t in trials]
    if outcome["best_epoch"] is not None:  # what was chosen on dev, and why
        dev = outcome["epochs"][outcome["best_epoch"] - 1]
        result.update(chosen_epoch=outcome["best_epoch"], dev_accuracy=dev["accuracy"], dev_f1_macro=dev["f1_macro"], dev_loss=dev["eval_loss"])
    if "test" in finished:
        test = finished["test"]
        references = [example["labels"] for example in context.data.test]
        result.update(predictions=finished["predictions"], references=references, predictions_split="test", test=test)
        result.update({k: test[k] for k in ("eval_loss", "eval_loss_sum", "accuracy", "f1_macro")})
    elif outcome["epochs"] and context.data.test is None:
        last = outcome["epochs"][-1]
        result.update({k: last[k] for k in ("eval_loss", "eval_loss_sum", "accuracy", "f1_macro")})
        references = [example["labels"] for example in context.data.eval]
        result.update(predictions=outcome["predictions"], references=references, predictions_split="eval")
    if "adapter_size_mb" in finished:
        result.update(adapter_size_mb=finished["adapter_size_mb"], weights_dir=run.run_id)
    return result

"""A grid: set up once in this process (data, tokenizer, tokenised examples), then each run in a worker
process of its own (worker.py): trials → choice on dev → one test evaluation → record → saved weights.

This process alone plans, schedules and writes the store; workers get plain data in and give plain data back,
so a scheduler can later stand where execution.run_request stands without changing any training code."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from . import config_file, hardware, models, trackers
from .claims import ClaimBook, left_by_dead_process, owner_prefix
from .config import AUTO, GridConfig, TrainConfig, as_dict
from .data import TokenizedData, length_keeping, load_labeled_texts, split, token_lengths, tokenize_split
from .errors import UserError
from .execution import run_request
from .executors import LocalExecutor, RayExecutor, RayOptions, RunOutcome, Slot, local_slots, materialise
from .measure import MEASUREMENT_NOTES
from .methods import REGISTRY, Method
from .recommend import Constraints
from .report import findings, header_lines, render_markdown
from .report_html import render_html
from .results import SCHEMA_VERSION, ResultStore, fingerprint, make_ordinary, protocol_differences, provenance, run_id, write_atomic
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
    elsewhere: int = 0  # runs another process (a shard, an identical command) claimed or finished meanwhile
    records: list[dict[str, Any]] = field(default_factory=list)  # every run now in the folder (API users read them)


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
    models.configure_padding(tokenizer, model_config)
    positions = getattr(model_config, "max_position_embeddings", None)
    if grid.data.max_length == AUTO:  # the training texts decide, the model caps
        kept_whole = length_keeping(token_lengths(tokenizer, parts.train), grid.data.max_length_keep)
        max_length = min(models.max_length_for(tokenizer, None, positions), kept_whole)
    else:
        max_length = models.max_length_for(tokenizer, grid.data.max_length, positions)
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
            # the length used is the experiment; that --max-length auto chose it is only shown in the report
            "data": {**as_dict(grid.data), "max_length": prepared.max_length, "max_length_requested": grid.data.max_length, "sha256": prepared.data_sha256},
            "train": as_dict(train),
            "dry_run": grid.dry_run,
            "select_only": grid.select_only,
        }
        planned.append(PlannedRun(method, train, config, fingerprint(config), run_id(name, seed)))
    return planned


def _shard(grid: GridConfig, planned: list[PlannedRun]) -> list[PlannedRun]:
    """--shard I/N: every N-th run of the plan from the I-th on, so each shard gets a mix of methods and seeds
    and the parts are the same in every job that plans the same grid."""
    part = grid.scale.shard_part()
    if part is None:
        return planned
    index, count = part
    return planned[index - 1 :: count]


def _todo(grid: GridConfig, planned: list[PlannedRun], store: ResultStore) -> list[PlannedRun]:
    """The runs still to do; a finished run of other settings under the same name stops the grid."""
    todo = []
    for run in planned:
        done = store.finished(run.run_id)
        if done is None:
            todo.append(run)
        else:
            _refuse_other_settings(grid, run, done, store)
    return todo


def _refuse_other_settings(grid: GridConfig, run: PlannedRun, done: dict[str, Any], store: ResultStore) -> None:
    differences = [] if grid.dry_run else protocol_differences(done, run.config, type(grid.train))
    if differences:
        raise UserError(
            f"{store.path_of(run.run_id)} holds a finished run of different settings ({'; '.join(differences[:3])}); "
            "use another --out, or delete that file to run it again"
        )


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # above a progress bar over the grid, when there is one
    sys.stderr.flush()


@contextmanager
def _work_folder(out: Path) -> Iterator[Path]:
    """Scratch space inside the output folder (so finished weights move in by a rename), removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{owner_prefix()}", dir=out))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


WORK_PREFIX = ".work-"


def _sweep_leftovers(out: Path, store: ResultStore) -> None:
    """What killed processes left in the folder: half-written files of the store, and work folders (with
    their half-trained weights) of grid processes that are gone."""
    removed = store.remove_stale_temporary_files()
    for folder in out.glob(f"{WORK_PREFIX}*"):
        if folder.is_dir() and left_by_dead_process(folder.name, WORK_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        _log(f"removed {removed} temporary file(s) or folder(s) left in {out} by processes that were killed")


def run_grid(grid: GridConfig, progress: bool = True) -> GridSummary:
    grid.validate()
    prepared = _prepare(grid)
    store = ResultStore(grid.out)
    planned = _shard(grid, _plan(grid, prepared))  # this job's part of the grid; the whole grid without --shard
    todo = _todo(grid, planned, store)
    try:
        grid.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {grid.out}: {exc.strerror}") from None
    _sweep_leftovers(grid.out, store)
    config_file.write(grid)
    _log(_data_line(prepared, grid))
    skipped = len(planned) - len(todo)
    if skipped:
        _log(f"{skipped} run(s) already finished in {grid.out}: skipped")
    tally = _run_all(grid, prepared, store, todo, progress) if todo else _Tally()
    records = store.records()
    files = write_reports(store, records)
    return GridSummary(tally.ran, skipped, tally.failed, files, tally.elsewhere, records)


@dataclass
class _Tally:
    ran: int = 0
    failed: int = 0
    elsewhere: int = 0


@dataclass
class _Grid:
    """One grid under way: what every run shares, and the executor running them."""

    grid: GridConfig
    prepared: Prepared
    store: ResultStore
    data: TokenizedData
    data_file: Path
    work: Path
    executor: Any
    progress: bool  # per-run progress bars too (one run at a time; several at once would fight over the lines)
    bar: Any  # one bar over the grid, with its ETA
    total: int
    data_ref: Any = None  # the tokenised data in Ray's object store

    def context(self, run: PlannedRun, label: str, slot: Slot) -> _RunContext:
        return _RunContext(self.grid, self.prepared.model_path, self.data, self.data_file, self.work / run.run_id, self.progress, label, slot)


def _run_all(grid: GridConfig, prepared: Prepared, store: ResultStore, todo: list[PlannedRun], progress: bool) -> _Tally:
    """Tokenise once for every run, hand the runs to the executor as it has room, store each record as it
    comes back. A run is claimed before it is handed out, so that processes sharing grid.out share the work."""
    claims = ClaimBook(grid.out, grid.scale.claim_timeout)
    with _work_folder(grid.out) as work:
        data = tokenize_split(prepared.parts, prepared.tokenizer, prepared.max_length)
        data_file = work / "data.json"
        write_tokenized(data, data_file)
        executor = _executor(grid, work)
        several = executor.concurrent > 1 or grid.scale.executor == "ray"
        # One bar over the grid, its ETA the mean time of a finished run (smoothing 0: runs of different methods
        # differ); a run going alone also draws its own bars, on the line below (_RunContext.send).
        bar = tqdm(total=len(todo), desc="grid", unit="run", disable=not progress, dynamic_ncols=True, smoothing=0)
        state = _Grid(grid, prepared, store, data, data_file, work, executor, progress and not several, bar, len(todo))
        if grid.scale.executor == "ray":
            state.data_ref = executor.put(dataclasses.asdict(data))
        try:
            return _dispatch(state, todo, claims)
        except BaseException:  # Ctrl-C, or a conflict found on a claim: stop what is under way, keep what finished
            executor.cancel()
            raise
        finally:
            claims.release_all()
            executor.close()
            bar.close()


def _executor(grid: GridConfig, work: Path) -> Any:
    scale = grid.scale
    device = hardware.likely_device(scale.device) if scale.executor == "local" else None
    if scale.executor == "ray":
        import torch

        on_gpu = scale.device == "cuda" or (scale.device == "auto" and torch.cuda.is_available())
        options = RayOptions(scale.ray_address, scale.ray_num_cpus, scale.ray_num_gpus, scale.ray_max_retries)
        return RayExecutor(options, on_gpu, scale.num_processes, grid.out)
    import torch

    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    count = scale.worker_count(gpus)
    if count is None:
        return LocalExecutor([Slot()], inline=True)
    return LocalExecutor(local_slots(count, device.type, scale.num_processes, len(os.sched_getaffinity(0))))


def _dispatch(state: _Grid, todo: list[PlannedRun], claims: ClaimBook) -> _Tally:
    tally, pending, in_flight, short = _Tally(), list(todo), {}, None
    while pending or in_flight:
        while pending and len(in_flight) < state.executor.concurrent and short is None:
            short = _short_of_space(state, pending[0], len(in_flight))
            if short is not None:
                break  # the runs under way finish and are stored; then the grid stops with the reason
            run = pending.pop(0)
            if _claim(state, run, claims):
                in_flight[_submit(state, run, tally.ran + len(in_flight) + 1)] = run
            else:
                tally.elsewhere += 1
                state.bar.update(1)
        if not in_flight:
            break
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in done:
            run = in_flight.pop(future)
            tally.ran += 1
            tally.failed += _store_outcome(state, run, _outcome_of(future, run, state), tally.ran)
            claims.release(run.run_id)
            state.bar.update(1)
    if short is not None:
        raise UserError(short)
    return tally


SPACE_MARGIN_MB = 50.0  # run JSONs, reports and tokenizer files beside the weights


def _short_of_space(state: _Grid, run: PlannedRun, under_way: int) -> str | None:
    """Why the next run would not fit on grid.out's disk, before it trains rather than after: its weights
    (the whole model for a method that trains every weight, a small share otherwise) and, with --lr-grid,
    one state file per rate, for it and each run under way. None when it fits."""
    if state.grid.dry_run:
        return None
    # the sizes of the model's weight files, already listed once for the run identity (local folder or hub cache)
    model_mb = sum(state.prepared.model_identity.get("weights", {}).values()) / 2**20
    rates = state.grid.train.learning_rates() or [run.config["lr"]]
    # --select-only saves nothing; several rates each leave a state file until the choice
    files = 0 if state.grid.select_only else (len(rates) if len(rates) > 1 else 0) + 1
    share = 1.0 if run.method.peft_config_class is None else 0.05
    needed = model_mb * share * files * (under_way + 1) + SPACE_MARGIN_MB
    free = shutil.disk_usage(state.grid.out).free / 2**20
    if free >= needed:
        return None
    return (f"not enough free space in {state.grid.out}: {free:.0f} MB free, {run.run_id} needs about {needed:.0f} MB "
            f"(its weights{' and trial states' if files > 1 else ''}); free some space or give another --out")  # fmt: skip


def _claim(state: _Grid, run: PlannedRun, claims: ClaimBook) -> bool:
    """Whether this process trains the run: not when another process holds it or finished it meanwhile."""
    holder = claims.claim(run.run_id, run.fingerprint)
    if holder is not None:
        _log(f"{run.run_id}: being trained by pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started_utc')}: left to it")
        return False
    done = state.store.finished(run.run_id)
    if done is None:
        return True
    claims.release(run.run_id)
    _refuse_other_settings(state.grid, run, done, state.store)
    _log(f"{run.run_id}: finished meanwhile by another process: skipped")
    return False


def _submit(state: _Grid, run: PlannedRun, index: int) -> Future:
    label = f"[{index}/{state.total}] {run.run_id}"
    rates = state.grid.train.lr_grid or f"{run.config['lr']:g}"
    _log(f"{label}: started: {run.method.summary}; lr {rates}")
    if state.grid.scale.executor == "ray":
        return state.executor.submit(_payload(state, run, label), state.data_ref)
    return state.executor.submit(lambda slot: _run_here(run, state.context(run, label, slot)))


def _run_here(run: PlannedRun, context: _RunContext) -> RunOutcome:
    record = _execute(run, context)
    weights = context.folder / "weights" if record["result"].get("weights_dir") else None
    return RunOutcome(record, weights)


def _outcome_of(future: Future, run: PlannedRun, state: _Grid) -> RunOutcome:
    """The run's outcome; a Ray task that failed for good (its retries spent) becomes a failed run."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - the executor's failure of one run must not stop the grid
        text = str(exc).strip().splitlines()
        result = {"status": "failed", "error": f"{type(exc).__name__}: {text[0] if text else ''}", "worker_died": True}
        result["majority_accuracy"] = state.data.majority_accuracy
        return RunOutcome(_record(run, state.data, result, {}))


def _store_outcome(state: _Grid, run: PlannedRun, outcome: RunOutcome, finished: int) -> int:
    """Keep a run's weights and record (the driver alone writes the store); 1 if the run failed."""
    record = outcome.record
    record["provenance"] = provenance(record["provenance"]["device"], run.train, _scale_provenance(state))
    staged = materialise(outcome, state.work / run.run_id)
    if staged is not None:
        _keep_weights(record, staged, state.grid.out / run.run_id)
    state.store.save(record)
    for problem in trackers.log_run(state.grid.report_to, record, state.grid.out):
        _log(f"peftbench: warning: {run.run_id} could not be logged to {problem} (the run is saved)")
    if state.progress and record["result"].get("worker_died"):
        _log("")  # a killed worker leaves its progress bar unfinished on the line
    _log(f"[{finished}/{state.total}] {run.run_id}: {_one_line_result(record['result'])}")
    _refresh_reports(state.store)
    return int(record["result"]["status"] == "failed")


def _scale_provenance(state: _Grid) -> dict[str, Any]:
    scale = state.grid.scale
    return {
        "workers": "inline" if state.executor.concurrent == 1 and getattr(state.executor, "inline", False) else "process",
        "executor": scale.executor, "concurrent_runs": state.executor.concurrent,
        "processes_per_run": scale.num_processes, "device_requested": scale.device,
    }  # fmt: skip


def _payload(state: _Grid, run: PlannedRun, label: str) -> dict[str, Any]:
    """A run as plain data, for a Ray task on any machine of the cluster (runner.execute_payload)."""
    return {
        "grid": state.grid, "method": run.method.name, "train": as_dict(run.train), "config": run.config,
        "fingerprint": run.fingerprint, "run_id": run.run_id, "model_path": state.prepared.model_path, "label": label,
    }  # fmt: skip


def execute_payload(payload: dict[str, Any], data: dict[str, Any], scratch: Path) -> RunOutcome:
    """One whole run where a Ray task landed: its workers are processes of this machine, in `scratch`."""
    grid: GridConfig = payload["grid"]
    run = PlannedRun(REGISTRY[payload["method"]], TrainConfig(**payload["train"]), payload["config"], payload["fingerprint"], payload["run_id"])
    tokenized = TokenizedData(**data)
    data_file = scratch / "data.json"
    write_tokenized(tokenized, data_file)
    threads = str(max(1, int(grid.scale.ray_num_cpus)))
    slot = Slot({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    context = _RunContext(grid, payload["model_path"], tokenized, data_file, scratch / run.run_id, False, payload["label"], slot)
    return _run_here(run, context)


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
    make_ordinary(staged)
    staged.rename(final)
    if staged.parent.name.startswith(".incoming-"):  # sent by a Ray task through the shared --out
        shutil.rmtree(staged.parent, ignore_errors=True)


def _data_line(prepared: Prepared, grid: GridConfig) -> str:
    """What the runs train and are judged on, said before the first run: sizes, what was cut, which length."""
    parts, data = prepared.parts, grid.data
    judged = f", dev {len(parts.eval.texts)}, test {len(parts.test.texts)}" if parts.test else f", eval {len(parts.eval.texts)}"
    cut = []
    if data.max_train_samples is not None:
        cut.append(f"training cut to the first {data.max_train_samples}")
    if data.max_eval_samples is not None:
        cut.append(f"evaluation splits to the first {data.max_eval_samples} each")
    shown = f" ({'; '.join(cut)})" if cut else ""
    return f"data: {parts.train.source}, train {len(parts.train.texts)}{judged} examples{shown}; max_length {prepared.max_length}"


def _one_line_result(result: dict[str, Any]) -> str:
    if result["status"] == "failed":
        return f"failed: {result['error']}"
    if result["status"] == "dry_run":
        return f"{result['trainable_params']:,} of {result['total_params']:,} parameters trainable"
    accuracy = result.get("accuracy")  # absent when a run diverged before its first evaluation, or was --select-only
    majority = result.get("majority_accuracy")
    if accuracy is not None:
        shown = f"accuracy {accuracy:.4f}" + (f" (majority class {majority:.4f})" if majority is not None else "")
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
    model_path: str
    data: TokenizedData
    data_file: Path
    folder: Path  # this run's scratch folder
    progress: bool
    label: str
    slot: Slot  # the GPUs and CPU threads of this run's workers

    def send(self, request: dict[str, Any], name: str) -> dict[str, Any]:
        """Run a worker request, its files in this run's scratch folder under `name`."""
        scale = self.grid.scale
        # tqdm reads its defaults from TQDM_* variables: the worker's bars go under the grid's bar, not over it
        # (a run in this process finds the grid's bar itself)
        env = {**self.slot.env, "TQDM_POSITION": "1"} if self.progress else self.slot.env
        return run_request(request, self.folder / name, scale.workers == "inline", env, scale.num_processes)


def _request(run: PlannedRun, context: _RunContext, kind: str, lr: float, **extra: Any) -> dict[str, Any]:
    """A worker request: plain data only, so that it can cross any process or machine boundary."""
    return {
        "kind": kind, "run_id": run.run_id, "method": run.method.name, "model_path": context.model_path,
        "base_model": run.config["model"], "train": run.config["train"], "lr": lr, "data_file": str(context.data_file),
        "weights_dir": str(context.folder / "weights"), "progress": context.progress, "dry_run": context.grid.dry_run,
        "device": context.grid.scale.device, **extra,
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
    device = resolved.get("device") or hardware.describe(hardware.likely_device("cpu" if context.grid.scale.device == "cpu" else "auto"))
    return _record(run, context.data, result, device)


def _record(run: PlannedRun, data: TokenizedData, result: dict[str, Any], device: dict[str, Any]) -> dict[str, Any]:
    """A run's record; its provenance (command, commit) is completed by the grid process (_store_outcome)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "config": run.config,
        "config_fingerprint": run.fingerprint,
        "data": data.description,
        "measurement": MEASUREMENT_NOTES,
        "result": result,
        "provenance": {"device": device},
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
        "train_log": outcome.get("steps", []),  # [step, loss, lr] of the chosen trial
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

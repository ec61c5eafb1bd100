"""A grid, start to end: planned once in this process (runner/planning.py), then each run handed to an executor
as it has room, claimed first so that processes sharing one output folder share the work, and stored as it
comes back. This process alone writes the store; the runs' workers get plain data in and give plain data back.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from peftbench import hardware
from peftbench.config import files as config_files
from peftbench.config.sections import GridConfig
from peftbench.data import TokenizedData, tokenize_split
from peftbench.errors import UserError, first_line
from peftbench.execution import executors
from peftbench.execution.claims import ClaimBook, left_by_dead_process, owner_prefix
from peftbench.execution.executors import Executor, RunOutcome, materialise
from peftbench.files import write_atomic
from peftbench.records import Status
from peftbench.reporting import trackers
from peftbench.reporting.reports import write_reports
from peftbench.run.worker import write_tokenized
from peftbench.runner import planning
from peftbench.runner.planning import PlannedRun, Prepared
from peftbench.runner.protocol import RunJob, failed_record
from peftbench.runner.protocol import log as _log
from peftbench.store.provenance import provenance
from peftbench.store.runs import ResultStore
from peftbench.store.schema import RunRecord, RunResult
from peftbench.store.unfinished import UnfinishedTrials

WORK_PREFIX = ".work-"
SPACE_MARGIN_MB = 50.0  # run JSONs, reports and tokenizer files beside the weights
PEFT_WEIGHTS_SHARE = 0.05  # what a PEFT method saves, at most, as a share of the model's weights


@dataclass
class GridSummary:
    ran: int
    skipped: int
    failed: int
    out_files: list[str]
    elsewhere: int = 0  # runs another process (a shard, an identical command) claimed or finished meanwhile
    records: list[RunRecord] = field(default_factory=list)  # every run now in the folder (API users read them)


def run_grid(grid: GridConfig, progress: bool = True) -> GridSummary:
    """Plan, then run what is left of this job's part of the grid, then the reports."""
    grid.validate()
    trackers.check_installed(grid.report_to)
    executors.check_available(grid.scale)
    prepared = planning.prepare(grid)
    store = ResultStore(grid.out)
    planned = planning.shard(grid, planning.plan(grid, prepared))  # this job's part; the whole grid without --shard
    todo = planning.todo(grid, planned, store)
    _refuse_links(grid, store, todo)
    short = _short_of_space(grid, prepared, todo[0], 0) if todo else None
    if short is not None:  # said before anything is written (the first run's need; each later one is checked too)
        raise UserError(short)
    try:
        grid.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {grid.out}: {exc.strerror}") from None
    _sweep_leftovers(grid.out, store)
    written = grid.out / config_files.WRITTEN_NAME
    write_atomic(written, config_files.render(grid, written))
    _log(planning.data_line(prepared, grid))
    if prepared.head_note:
        _log(f"peftbench: note: {prepared.head_note}")
    if slow := hardware.emulated_bf16_note(grid.train.precision, grid.scale.device):
        _log(f"peftbench: note: {slow}")
    skipped = len(planned) - len(todo)
    if skipped:
        _log(f"{skipped} run(s) already finished in {grid.out}: skipped")
    tally = _run_all(grid, prepared, store, todo, progress) if todo else _Tally()
    records = store.records()
    files = write_reports(grid.out, records)
    return GridSummary(tally.ran, skipped, tally.failed, files, tally.elsewhere, records)


def _refuse_links(grid: GridConfig, store: ResultStore, todo: list[PlannedRun]) -> None:
    """Nothing outside --out is written: a folder or file that a run writes through, given as a symbolic link
    inside --out (runs/, claims/, a run's weights, a tracker's store), is refused before anything is written."""
    inside = [
        *store.own_paths([run.run_id for run in todo]),
        ClaimBook.folder_of(grid.out),
        *trackers.written_paths(grid.report_to, grid.out),
    ]
    for path in inside:
        if path.is_symlink():
            raise UserError(
                f"{path} is a symbolic link: what peftbench writes there would land outside --out {grid.out}; "
                "remove the link (or make it a folder of its own)"
            )


@contextmanager
def _work_folder(out: Path) -> Iterator[Path]:
    """Scratch space inside the output folder (so finished weights move in by a rename), removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{owner_prefix()}", dir=out))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


REPORTS_SHARE = 0.1  # the most of a grid's time that interim reports take (_interim_reports)


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
    executor: Executor
    bars: bool  # per-run progress bars too (runs go one at a time on this machine)
    bar: Any  # one bar over the grid, with its ETA
    total: int
    claims: ClaimBook
    reports_due: float = 0.0  # time.monotonic() from which the next interim refresh of the reports is made
    reports_stale: bool = False  # a run was stored since the reports were last written

    def job(self, run: PlannedRun, label: str) -> RunJob:
        folder = self.work / run.run_id
        return RunJob(run, self.grid, self.prepared.model_path, self.data, self.data_file, folder, label, self.bars)


def _run_all(
    grid: GridConfig, prepared: Prepared, store: ResultStore, todo: list[PlannedRun], progress: bool
) -> _Tally:
    """Tokenise once for every run, hand the runs to the executor as it has room, store each record as it
    comes back. A run is claimed before it is handed out, so that processes sharing grid.out share the work."""
    claims = ClaimBook(grid.out, grid.scale.claim_timeout)
    with _work_folder(grid.out) as work:
        data = tokenize_split(prepared.parts, prepared.tokenizer, prepared.max_length)
        data_file = work / "data.json"
        write_tokenized(data, data_file)
        executor = executors.build(grid.scale, grid.out)
        # One bar over the grid, its ETA the mean time of a finished run (smoothing 0: runs of different methods
        # differ); a run going alone also draws its own bars, on the line below (protocol's TQDM_POSITION).
        bar = tqdm(total=len(todo), desc="grid", unit="run", disable=not progress, dynamic_ncols=True, smoothing=0)
        bars = progress and executor.one_at_a_time_here
        state = _Grid(grid, prepared, store, data, data_file, work, executor, bars, bar, len(todo), claims)
        try:
            return _dispatch(state, todo, claims)
        except BaseException:  # Ctrl-C, or a conflict found on a claim: stop what is under way, keep what finished
            executor.cancel()
            if state.reports_stale:
                _refresh_reports(store)
            raise
        finally:
            claims.release_all()
            executor.close()
            bar.close()


def _dispatch(state: _Grid, todo: list[PlannedRun], claims: ClaimBook) -> _Tally:
    tally, pending, short = _Tally(), list(todo), None
    in_flight: dict[Future[RunOutcome], PlannedRun] = {}
    while pending or in_flight:
        while pending and len(in_flight) < state.executor.concurrent and short is None:
            short = _short_of_space(state.grid, state.prepared, pending[0], len(in_flight))
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


def _short_of_space(grid: GridConfig, prepared: Prepared, run: PlannedRun, under_way: int) -> str | None:
    """Why the next run would not fit on grid.out's disk, before it trains rather than after: its weights
    (the whole model for a method that trains every weight, a small share otherwise) and, with --lr-grid,
    one state file per rate, for it and each run under way. None when it fits."""
    if grid.dry_run:
        return None
    rates = run.learning_rates()
    # --select-only saves nothing; several rates each leave a state file until the choice
    files = 0 if grid.select_only else (len(rates) if len(rates) > 1 else 0) + 1
    share = 1.0 if run.method.peft_config_class is None else PEFT_WEIGHTS_SHARE
    needed = prepared.model_mb * share * files * (under_way + 1) + SPACE_MARGIN_MB
    existing = next(folder for folder in (grid.out, *grid.out.absolute().parents) if folder.exists())
    free = shutil.disk_usage(existing).free / 2**20  # --out's disk, before --out exists
    if free >= needed:
        return None
    what = "its weights and trial states" if files > 1 else "its weights"
    return (
        f"not enough free space in {grid.out}: {free:.0f} MB free, {run.run_id} needs about {needed:.0f} MB "
        f"({what}); free some space or give another --out"
    )


def _claim(state: _Grid, run: PlannedRun, claims: ClaimBook) -> bool:
    """Whether this process trains the run: not when another process holds it or finished it meanwhile."""
    holder = claims.claim(run.run_id, run.fingerprint)
    if holder is not None:
        since = f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started_utc')}"
        _log(f"{run.run_id}: being trained by {since}: left to it")
        return False
    done = state.store.finished(run.run_id)
    if done is None:
        return True
    claims.release(run.run_id)
    planning.refuse_other_settings(state.grid, run, done, state.store)
    _log(f"{run.run_id}: finished meanwhile by another process: skipped")
    return False


def _submit(state: _Grid, run: PlannedRun, index: int) -> Future[RunOutcome]:
    label = f"[{index}/{state.total}] {run.run_id}"
    rates = ",".join(f"{lr:g}" for lr in run.learning_rates())
    _log(f"{label}: started: {run.method.summary}; lr {rates}")
    return state.executor.submit(state.job(run, label))


def _outcome_of(future: Future[RunOutcome], run: PlannedRun, state: _Grid) -> RunOutcome:
    """The run's outcome; a Ray task that failed for good (its retries spent) becomes a failed run."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - the executor's failure of one run must not stop the grid
        return RunOutcome(failed_record(run, state.data, f"{type(exc).__name__}: {first_line(exc)}"))


def _store_outcome(state: _Grid, run: PlannedRun, outcome: RunOutcome, finished: int) -> int:
    """Keep a run's weights and record (the driver alone writes the store); 1 if the run failed."""
    record = outcome.record
    record.provenance = provenance(record.provenance.device, run.train, state.executor.describe())
    keep(state.store, state.claims, materialise(outcome, state.work / run.run_id), record)
    if record.status != Status.FAILED:  # a failed run is tried again, from the trials it ended
        UnfinishedTrials(state.grid.out, run.run_id, run.fingerprint).clear()
    for problem in trackers.log_run(state.grid.report_to, record, state.grid.out):
        _log(f"peftbench: warning: {run.run_id} could not be logged to {problem} (the run is saved)")
    if state.bars and record.result.worker_died:
        _log("")  # a killed worker leaves its progress bar unfinished on the line
    _log(f"[{finished}/{state.total}] {run.run_id}: {_one_line_result(record.result)}")
    _interim_reports(state)
    return int(record.status == Status.FAILED)


def keep(store: ResultStore, claims: ClaimBook, staged: Path | None, record: RunRecord) -> None:
    """A run's weights and record, stored under the claims lock: two processes finishing one run (after a claim
    was taken over) store one after the other, so the record in runs/ always describes the weights beside it."""
    with claims.exclusive():
        if staged is not None and record.result.weights_dir:
            store.place_weights(staged, record.run_id)
            if staged.parent.name.startswith(".incoming-"):  # sent by a Ray task through the shared --out
                shutil.rmtree(staged.parent, ignore_errors=True)
        store.save(record)


def _interim_reports(state: _Grid) -> None:
    """The reports after a run, unless the last refresh was too recent: rebuilding them (statistics, plots) took
    0.65 s after a tiny run that trained in 0.5 s, so a grid of short runs would spend more time on interim
    reports than on training. They are refreshed at most so often that they take REPORTS_SHARE of the grid's
    time; after every run when runs take minutes. The run files are written at once all the same, and the
    reports in full when the grid ends or stops."""
    state.reports_stale = True
    if time.monotonic() < state.reports_due:
        return
    started = time.monotonic()
    _refresh_reports(state.store)
    state.reports_stale = False
    state.reports_due = started + (time.monotonic() - started) / REPORTS_SHARE


def _refresh_reports(store: ResultStore) -> None:
    """The reports after each run; a report that cannot be built must not stop the grid (the run files are kept,
    and `peftbench report DIR` rebuilds the reports later)."""
    try:
        write_reports(store.root, store.records())
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the grid's runs matter more than its interim reports
        _log(f"peftbench: could not rebuild the reports ({type(exc).__name__}: {exc}); the runs are saved")


def _one_line_result(result: RunResult) -> str:
    if result.status == Status.FAILED:
        return f"failed: {result.error}"
    if result.status == Status.DRY_RUN:
        return f"{result.trainable_params:,} of {result.total_params:,} parameters trainable"
    accuracy = result.accuracy  # None when a run diverged before its first evaluation, or was --select-only
    majority = result.majority_accuracy
    if accuracy is not None:
        shown = f"accuracy {accuracy:.4f}" + (f" (majority class {majority:.4f})" if majority is not None else "")
    elif result.dev_accuracy is not None:
        shown = f"dev accuracy {result.dev_accuracy:.4f} at lr {result.chosen_lr:g} (test not evaluated)"
    else:
        shown = "no evaluation"
    return f"{result.status}, {shown}, train time {result.train_time_min:.2f} min"

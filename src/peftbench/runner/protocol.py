"""The protocol of one run, phase by phase; the guarantee of a benchmark that reads its test split honestly.

1. Trials: one worker per learning rate trains the run and scores every epoch on dev (`eval` in the reference
   protocol, which has no dev set). Nothing here sees test metrics.
2. The choice: the best epoch of the best rate on dev (records.better_on_dev); ties keep the first rate tried.
3. The finish: the chosen weights, and only they, are evaluated once on the test split, and saved. A run of one
   rate finishes inside its trial's worker (no second model load); with an lr grid a finish worker loads the
   chosen trial's weights. `--select-only` stops after the choice: the test split is never read.
4. The record: what was trained (every trial), what was chosen and why, what the chosen weights scored.

A RunJob is plain data, so that it can run in a thread of the grid process or in a Ray task on another
machine; the workers it starts get plain data in and give plain data back (run/worker.py).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench import hardware
from peftbench.config.sections import GridConfig
from peftbench.data import TokenizedData
from peftbench.execution.executors import RunOutcome, Slot, worker_env
from peftbench.execution.workers import run_request
from peftbench.records import Status, better_on_dev
from peftbench.run.measure import MEASUREMENT_NOTES
from peftbench.run.messages import FINISH, TRIAL, Finished, Kind, Params, TrialOutcome, WorkRequest, WorkResponse
from peftbench.run.worker import write_tokenized
from peftbench.runner.planning import PlannedRun
from peftbench.store.schema import SCHEMA_VERSION, RunRecord, read_record
from peftbench.store.unfinished import UnfinishedTrials


def log(message: str) -> None:
    """A line of the grid's log: on stderr, above the progress bar over the grid when there is one."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


MEMORY_KEYS = ("peak_memory_mb", "peak_memory_method", "process_peak_rss_mb")
TEST_METRICS = ("eval_loss", "eval_loss_sum", "accuracy", "f1_macro")


@dataclass
class RunJob:
    """One whole run, as an executor receives it: call it with the slot it runs in."""

    run: PlannedRun
    grid: GridConfig
    model_path: str
    data: TokenizedData
    data_file: Path  # the tokenised splits, written once by the grid process for every run of this machine
    folder: Path  # this run's scratch folder in the grid's work folder
    label: str  # how the run is named in progress lines: "[2/5] lora__seed123"
    bars: bool = False  # the run's own progress bars (one run at a time; several at once would fight over lines)

    def __call__(self, slot: Slot, scratch: Path | None = None) -> RunOutcome:
        """The run's record and finished weights. scratch: a folder of the machine it landed on, when that is
        not the grid's (a Ray task): the tokenised data is written there for its workers."""
        folder, data_file = self.folder, self.data_file
        if scratch is not None:
            folder, data_file = scratch / self.run.run_id, scratch / "data.json"
            write_tokenized(self.data, data_file)
        record = _Protocol(self, slot, folder, data_file, resumable=scratch is None).record()
        weights = folder / "weights" if record.result.weights_dir else None
        return RunOutcome(record, weights)


def failed_record(run: PlannedRun, data: TokenizedData, error: str) -> RunRecord:
    """The record of a run whose executor gave up on it (a Ray task whose retries were spent)."""
    result = {"status": Status.FAILED, "error": error, "worker_died": True, "majority_accuracy": data.majority_accuracy}
    return _record(run, data, result, {})


@dataclass
class TrialRun:
    """One learning rate of a run: where its weights judged on dev were saved, and what its worker said."""

    lr: float
    state_file: str | None
    response: WorkResponse

    @property
    def outcome(self) -> TrialOutcome:
        """What its training did; only a trial that did not fail has one."""
        assert self.response.outcome is not None, "a failed trial has no outcome"
        return self.response.outcome


def choose(trials: list[TrialRun]) -> TrialRun:
    """The trial whose best epoch is best on dev (records.better_on_dev); ties keep the first rate tried. A
    trial the search stopped early is not chosen (it trained less than the others: --search halving)."""
    chosen, best = trials[0], None
    for trial in trials:
        if trial.outcome.pruned_at_step is not None:
            continue
        metrics = trial.outcome.best()
        if metrics is not None and better_on_dev(metrics, best):
            chosen, best = trial, metrics
    return chosen


class _Protocol:
    """One run under way: its workers' requests and responses, in its scratch folder."""

    def __init__(self, job: RunJob, slot: Slot, folder: Path, data_file: Path, resumable: bool) -> None:
        self.job, self.run, self.grid, self.data = job, job.run, job.grid, job.data
        # absolute: a worker runs in a folder of its own, not in the grid's working directory
        self.slot, self.folder, self.data_file = slot, folder.resolve(), data_file.resolve()
        self.responses: list[WorkResponse] = []  # of every worker, for the run's peak memory
        # ended trials are kept in --out where it is this machine's (a Ray task elsewhere has only scratch)
        self.unfinished = UnfinishedTrials(self.grid.out, self.run.run_id, self.run.fingerprint) if resumable else None

    def record(self) -> RunRecord:
        trials = self._trials()
        result: dict[str, Any] = {"majority_accuracy": self.data.majority_accuracy}
        failure = next((t.response for t in trials if t.response.failed), None)
        if failure is not None:
            result.update(_failed(failure))
        elif self.grid.dry_run:
            result.update(status=Status.DRY_RUN, **_counted(trials[0].response.params))
        else:
            result.update(self._chosen_and_finished(trials))
        result.update(self._measured())
        resolved = next((r.resolved for r in self.responses if r.resolved is not None), None)
        if resolved is None:
            return _record(self.run, self.data, result, self._device())
        result.update({k: v for k, v in dataclasses.asdict(resolved).items() if k != "device"})
        return _record(self.run, self.data, result, resolved.device)

    def _trials(self) -> list[TrialRun]:
        """Phase 1: one worker per learning rate; the only trial of a run finishes the run in its own worker."""
        rates = self._ordered(self.run.learning_rates())
        self.folder.mkdir(parents=True, exist_ok=True)
        journal = self.folder / "search.journal"
        halving = self.run.train.search == "halving"
        # several rates: the trials an interrupted attempt at this run ended are taken as they were
        kept = self.unfinished if len(rates) > 1 else None
        ended = kept.ended(rates, with_states=not self.grid.select_only) if kept else []
        if kept is not None:
            kept.restore_journal(len(ended), journal)
        else:
            journal.unlink(missing_ok=True)
        if ended:
            taken = ", ".join(f"{lr:g}" for lr in rates[: len(ended)])
            log(f"{self.job.label}: {len(ended)} trial(s) of an interrupted attempt taken as they ended (lr {taken})")
        self.responses += ended
        trials = [TrialRun(lr, self._state_file(n, kept), r) for n, (lr, r) in enumerate(zip(rates, ended))]
        for number in range(len(ended), len(rates)):
            lr = rates[number]
            label = self.job.label if len(rates) == 1 else f"{self.job.label} lr {lr:g}"
            state_file = self._state_file(number, kept)
            finish_in_trial = len(rates) == 1 and not self.grid.select_only
            request = self._request(
                TRIAL,
                lr,
                label,
                finish_in_trial=finish_in_trial,
                state_file=state_file,
                search_journal=str(journal) if halving else None,
            )
            trials.append(TrialRun(lr, state_file, self._send(request, f"trial{number}")))
            if trials[-1].response.failed:
                break  # a broken method or a dead worker: the other rates would fail alike
            if kept is not None:
                kept.keep(number, lr, trials[-1].response, journal if halving else None)
        return trials

    def _state_file(self, number: int, kept: UnfinishedTrials | None) -> str | None:
        """Where a trial keeps the weights it would be judged by, for a later finish (a select-only run keeps
        none): beside the run's kept trials when there are several rates, else in the scratch folder."""
        if self.grid.select_only:
            return None
        return str(kept.state_file(number) if kept else self.folder / f"trial{number}.safetensors")

    def _ordered(self, rates: list[float]) -> list[float]:
        """The order the rates train in. Successive halving run one rate after another stops a rate only where it
        trails the rates before it at a rung, so it saves most when the likeliest rate goes first: nearest the
        method's recommended rate (in log scale), then outwards. (A grid of rates rising to the best one, in
        ascending order, stopped nothing: benchmarks/bench_search.py.) The full grid keeps the order given."""
        if self.run.train.search != "halving":
            return rates
        centre = math.log(self.run.method.recommended_lr)
        return sorted(rates, key=lambda rate: abs(math.log(rate) - centre))

    def _chosen_and_finished(self, trials: list[TrialRun]) -> dict[str, Any]:
        """Phases 2 and 3: the choice on dev, then the chosen weights' one test evaluation."""
        chosen = choose(trials)
        outcome = chosen.outcome
        finished = chosen.response.finished or Finished(status=outcome.status, note=outcome.note)
        if chosen.response.finished is None and outcome.best_epoch is not None and not self.grid.select_only:
            request = self._request(FINISH, chosen.lr, self.job.label, state_file=chosen.state_file, outcome=outcome)
            response = self._send(request, "finish")
            if response.finished is None:
                return _failed(response)
            finished = response.finished
        return _result_of(self.run, self.data, self.grid.select_only, trials, chosen, finished)

    def _request(self, kind: Kind, lr: float, label: str, **extra: Any) -> WorkRequest:
        """A worker request: plain data only, so that it can cross any process or machine boundary."""
        return WorkRequest(
            kind=kind,
            run_id=self.run.run_id,
            method=self.run.method.name,
            model_path=self.job.model_path,
            base_model=self.run.config.model,
            train=self.run.config.train,
            lr=lr,
            data_file=str(self.data_file),
            weights_dir=str(self.folder / "weights"),
            label=label,
            progress=self.job.bars,
            dry_run=self.grid.dry_run,
            device=self.grid.scale.device,
            **extra,
        )

    def _send(self, request: WorkRequest, name: str) -> WorkResponse:
        """Run a worker request, its files in this run's scratch folder under `name`."""
        scale = self.grid.scale
        env = worker_env(self.slot, self.job.bars)  # a run in this process finds the grid's bar itself
        response = run_request(
            request, self.folder / name, scale.inline, env, scale.num_processes, self.slot.warm_start
        )
        self.responses.append(response)
        return response

    def _measured(self) -> dict[str, Any]:
        """A run's peak memory is the highest of its workers', and so is the share of the CPU that others took."""
        figures: dict[str, Any] = {}
        measured = [r for r in self.responses if r.peak_memory_mb is not None]
        if measured:
            peak = max(measured, key=lambda r: r.peak_memory_mb or 0.0)
            figures = {k: getattr(peak, k) for k in MEMORY_KEYS}
        shares = [r.cpu_busy_elsewhere for r in self.responses if r.cpu_busy_elsewhere is not None]
        if shares:
            figures["cpu_busy_elsewhere"] = max(shares)
        starts = [r.worker_start for r in self.responses if r.worker_start is not None]
        if starts:  # warm when every worker of the run was; else the first cold one, with why
            figures["worker_start"] = next((s for s in starts if s != "warm"), "warm")
        return {k: v for k, v in figures.items() if v is not None}

    def _device(self) -> dict[str, Any]:
        """The device, when no worker said which it used (every one failed before it started)."""
        requested = "cpu" if self.grid.scale.device == "cpu" else "auto"
        return hardware.describe(hardware.likely_device(requested))


def _failed(response: WorkResponse) -> dict[str, Any]:
    failed = {
        "status": Status.FAILED,
        "error": response.error or "worker gave no result",
        "traceback": response.traceback,
    }
    return {**failed, "worker_died": True} if response.worker_died else failed


def _counted(params: Params | None) -> dict[str, Any]:
    return dataclasses.asdict(params) if params is not None else {}


def _record(run: PlannedRun, data: TokenizedData, result: dict[str, Any], device: dict[str, Any]) -> RunRecord:
    """A run's record, from its workers' plain data through the reader of run files (so a record this version
    writes is one it reads); its provenance (command, commit) is completed by the grid process when it stores it."""
    return read_record(
        {
            "schema_version": SCHEMA_VERSION,
            "run_id": run.run_id,
            "config": run.config.to_dict(),
            "config_fingerprint": run.fingerprint,
            "data": data.description,
            "measurement": MEASUREMENT_NOTES,
            "result": result,
            "provenance": {"device": device},
        }
    )


def _result_of(
    run: PlannedRun,
    data: TokenizedData,
    select_only: bool,
    trials: list[TrialRun],
    chosen: TrialRun,
    finished: Finished,
) -> dict[str, Any]:
    """A finished run's result: what was trained (all trials), what was chosen, what the chosen weights scored."""
    outcome = chosen.outcome
    result = {
        **_counted(chosen.response.params),
        "status": finished.status,
        "note": finished.note,
        "chosen_lr": chosen.lr,
        **_times(trials),
        "train_it_per_s": outcome.train_it_per_s,
        "eval_it_per_s": outcome.eval_it_per_s,
        "train_samples_per_s": outcome.train_samples_per_s,
        "epochs": outcome.epochs,
        "train_log": outcome.steps,  # [step, loss, lr] of the chosen trial
    }
    if len(trials) > 1 or select_only:
        result["trials"] = [
            {
                "lr": t.lr,
                "status": t.outcome.status,
                "epochs": t.outcome.epochs,
                "train_steps": t.outcome.train_steps,
                "pruned_at_step": t.outcome.pruned_at_step,
            }
            for t in trials
        ]
    dev = outcome.best()
    if dev is not None:  # what was chosen on dev, and why
        result.update(
            chosen_epoch=outcome.best_epoch,
            chosen_step=dev.get("step"),
            dev_accuracy=dev["accuracy"],
            dev_f1_macro=dev["f1_macro"],
            dev_loss=dev["eval_loss"],
        )
    result.update(_scores(data, outcome, finished))
    if finished.adapter_size_mb is not None:
        result.update(adapter_size_mb=finished.adapter_size_mb, weights_dir=run.run_id)
    if finished.test_time_s is not None:
        result["test_time_s"] = finished.test_time_s
    if finished.inference is not None:
        result.update(dataclasses.asdict(finished.inference))
    return result


def _times(trials: list[TrialRun]) -> dict[str, Any]:
    """Training and evaluation time of every trial: what the run cost, whichever rate was chosen."""
    train_time = sum(t.outcome.train_time_s for t in trials)
    eval_time = sum(t.outcome.eval_time_s for t in trials)
    return {
        "train_steps": sum(t.outcome.train_steps for t in trials),
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "total_time_s": train_time + eval_time,
        "train_time_min": train_time / 60,
        "total_time_min": (train_time + eval_time) / 60,
    }


def _scores(data: TokenizedData, outcome: TrialOutcome, finished: Finished) -> dict[str, Any]:
    """The metrics a run is judged by: of the test split when there is one (read once, for the choice),
    else of the last evaluation of the held-out split (the reference protocol)."""
    if finished.test is not None:
        test = finished.test
        references = [example["labels"] for example in data.test or []]
        scores = {"predictions": finished.predictions, "references": references, "predictions_split": "test"}
        return {**scores, "test": test, **{k: test[k] for k in TEST_METRICS}}
    if outcome.epochs and data.test is None:
        last = outcome.epochs[-1]
        references = [example["labels"] for example in data.eval]
        scores = {"predictions": outcome.predictions, "references": references, "predictions_split": "eval"}
        return {**{k: last[k] for k in TEST_METRICS}, **scores}
    return {}

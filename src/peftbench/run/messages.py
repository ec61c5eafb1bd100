"""What crosses the boundary between the grid process and a worker: a request in, a response out, both plain
data (JSON), so that a worker can run in a child process, under torchrun or in a Ray task elsewhere. Each side
reads the other's JSON back into these types (pydantic checks them), so a renamed field fails where it is read.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from peftbench.records import Status, checked

Kind = Literal["trial", "finish"]
TRIAL: Kind = "trial"
FINISH: Kind = "finish"
T = TypeVar("T")


@dataclass(kw_only=True)
class TrialOutcome:
    """What a trial's training did (run.loop.TrainOutcome, less the weights it keeps): each evaluation (after
    each epoch, and every --eval-every steps: accuracy, f1_macro, eval_loss, ..., its epoch and step), its cost,
    and the evaluation that was best on dev."""

    status: Status
    epochs: list[dict[str, Any]] = field(default_factory=list)
    train_steps: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    eval_batches: int = 0
    train_it_per_s: float | None = None
    train_samples_per_s: float | None = None
    eval_it_per_s: float | None = None
    note: str = ""
    best_evaluation: int | None = None  # which of `epochs` (from 1) was best on dev
    stopped_early: str = ""  # why --patience ended the trial before its last epoch, if it did
    pruned_at_step: int | None = None  # --search halving stopped the trial after this step
    predictions: list[int] | None = None  # of the last evaluation, in file order
    steps: list[list[float]] = field(default_factory=list)  # [step, training loss, learning rate]

    def best(self) -> dict[str, Any] | None:
        """The evaluation chosen on dev (after an epoch, or within one with --eval-every); None when none was
        usable."""
        return self.epochs[self.best_evaluation - 1] if self.best_evaluation is not None else None

    @property
    def best_epoch(self) -> int | None:
        """The epoch of the evaluation chosen on dev."""
        best = self.best()
        return None if best is None else int(best["epoch"])


@dataclass(kw_only=True)
class InferenceCost:
    """What the chosen weights cost at inference (run.inference); the run record keeps these fields."""

    inference_ms_per_example: float  # median latency of one example at batch 1
    inference_samples_per_s: float  # over the split at inference_batch_size
    inference_batch_size: int
    inference_merged: bool  # the method was merged into the base weights first


@dataclass(kw_only=True)
class Finished:
    """A run's end: the status of the weights kept, and (with a test split) their one test evaluation."""

    status: Status
    note: str = ""
    test: dict[str, Any] | None = None  # eval_loss, eval_loss_sum, accuracy, f1_macro, top_predicted_class_share
    predictions: list[int] | None = None  # on the test split, in file order
    test_time_s: float | None = None  # wall-clock time of the test evaluation
    adapter_size_mb: float | None = None  # set when the weights were saved
    inference: InferenceCost | None = None  # measured after the weights were saved


@dataclass(kw_only=True)
class Params:
    """The model's parameters, each counted once, and how many the method trains."""

    total_params: int
    trainable_params: int
    trainable_pct: float
    frozen_tensors_in_bf16: int | None = None  # frozen weights stored in bf16 to save memory


@dataclass(kw_only=True)
class Resolved:
    """What `auto` and the launch resolved to in the worker."""

    precision_used: str
    attention_used: str
    attention_note: str | None = None  # the model refused the kernel asked for: which was used instead
    dropout_masks_used: str
    split_by_length_used: str
    device: dict[str, Any]  # hardware.describe's
    processes: int
    global_batch_size: int
    per_process_batch_size: int


class _Message:
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return checked(cls, json.loads(text))  # json reads NaN (a diverged loss) as Python does


@dataclass(frozen=True, kw_only=True)
class WorkRequest(_Message):
    """One piece of a run's work. A trial trains at one learning rate; a finish tests and saves chosen weights."""

    kind: Kind
    run_id: str
    method: str  # a registry name
    model_path: str  # what from_pretrained loads
    base_model: str  # the model as the user named it, written beside saved weights
    train: dict[str, Any]  # the run's TrainConfig, as data
    lr: float
    data_file: str  # the tokenised splits, written once by the grid process
    weights_dir: str  # where a finished run's weights are saved
    label: str  # how progress bars name it
    progress: bool = False
    dry_run: bool = False  # build and count, no training
    device: str = "auto"
    # a trial that is its run's only one finishes the run in the same process: the test evaluation, the weights
    finish_in_trial: bool = False
    state_file: str | None = None  # where a trial saves, and a finish loads, the trainable weights judged on dev
    outcome: TrialOutcome | None = None  # a finish: the chosen trial's outcome (its best epoch, status, note)
    search_journal: str | None = None  # --search halving: the run's study, shared by its trials (run.search)


@dataclass(kw_only=True)
class WorkResponse(_Message):
    """What a worker did; a failure of the work itself is data here (error), never an exception."""

    params: Params | None = None
    outcome: TrialOutcome | None = None  # a trial's
    finished: Finished | None = None  # the finish: status, note, test metrics and predictions, adapter size
    resolved: Resolved | None = None
    error: str | None = None  # "Type: first line of the message"
    traceback: str = ""
    worker_died: bool = False  # killed, or exited before it answered
    worker_start: str | None = None  # set by the grid: "warm" (forked, execution/warm.py), or "cold" and why
    peak_memory_mb: float | None = None
    peak_memory_method: str | None = None
    process_peak_rss_mb: float | None = None
    cpu_busy_elsewhere: float | None = None  # share of its cores' time other processes took (run.measure.CpuLoad)

    @property
    def failed(self) -> bool:
        return self.error is not None

    @classmethod
    def died(cls, why: str) -> WorkResponse:
        return cls(error=why, worker_died=True)

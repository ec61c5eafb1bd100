"""What crosses the boundary between the grid process and a worker: a request in, a response out, both plain
data (JSON), so that a worker can run in a child process, under torchrun or in a Ray task elsewhere."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["trial", "finish"]
TRIAL: Kind = "trial"
FINISH: Kind = "finish"


@dataclass(frozen=True, kw_only=True)
class WorkRequest:
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
    outcome: dict[str, Any] | None = None  # a finish: the chosen trial's outcome (its best epoch, status, note)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkRequest:
        return cls(**json.loads(text))


@dataclass(kw_only=True)
class WorkResponse:
    """What a worker did; a failure of the work itself is data here (error), never an exception."""

    params: dict[str, Any] | None = None  # total, trainable and trainable share of the parameters
    outcome: dict[str, Any] | None = None  # a trial's TrainOutcome, as data
    finished: dict[str, Any] | None = None  # the finish: status, note, test metrics and predictions, adapter size
    resolved: dict[str, Any] | None = None  # what `auto` resolved to, the device, the processes
    error: str | None = None  # "Type: first line of the message"
    traceback: str = ""
    worker_died: bool = False  # killed, or exited before it answered
    peak_memory_mb: float | None = None
    peak_memory_method: str | None = None
    process_peak_rss_mb: float | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkResponse:
        return cls(**json.loads(text))

    @classmethod
    def died(cls, why: str) -> WorkResponse:
        return cls(error=why, worker_died=True)

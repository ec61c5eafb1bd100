"""A run's record as types: what DIR/runs/<run_id>.json holds, read and checked by pydantic, written as plain JSON.

Version 2 is written. A version-1 file (written before the model's identity, --select-only and the execution
were recorded) is read through `_MIGRATIONS` into version 2's shape and stays a valid finished run. A field
missing from a result is None here and absent from the file; in the config and provenance None is written.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from peftbench.records import Status, checked

SCHEMA_VERSION = 2  # 2: model identity and data sha256 in config, execution in provenance
READABLE_SCHEMAS = (1, 2)
T = TypeVar("T")


@dataclass(kw_only=True)
class TestScores:
    """The one evaluation of the chosen weights on the test split."""

    eval_loss: float
    eval_loss_sum: float | None = None
    accuracy: float
    f1_macro: float
    top_predicted_class_share: float | None = None


@dataclass(kw_only=True)
class Epoch(TestScores):
    """One evaluation of a trial, after an epoch: of dev when there is a test split, else of eval; the same
    scores as the test evaluation's, with the epoch and its training loss."""

    epoch: int
    train_loss: float | None = None
    step: int | None = None  # the optimiser steps done when it was made (runs of earlier versions: unset)


@dataclass(kw_only=True)
class TrialSummary:
    """One learning rate a run tried: how it ended and its evaluations."""

    lr: float
    status: Status
    epochs: list[Epoch] = field(default_factory=list)
    train_steps: int | None = None  # the optimiser steps it trained (runs of earlier versions: unset)
    pruned_at_step: int | None = None  # --search halving stopped it after this step


@dataclass(kw_only=True)
class RunResult:
    """What a run did: its status, its cost, what was chosen on dev and what the chosen weights scored. Which
    fields are set depends on the status: a failed run has its error, a dry run its parameter counts only."""

    status: Status
    note: str | None = None
    error: str | None = None  # a failed run: "Type: first line of the message"
    traceback: str | None = None
    worker_died: bool | None = None
    majority_accuracy: float | None = None
    # parameters
    total_params: int | None = None
    trainable_params: int | None = None
    trainable_pct: float | None = None
    frozen_tensors_in_bf16: int | None = None
    # cost, over every trial
    chosen_lr: float | None = None
    train_steps: int | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    test_time_s: float | None = None  # the one test evaluation (not in total_time_s, which is train + dev)
    total_time_s: float | None = None
    train_time_min: float | None = None
    total_time_min: float | None = None
    train_it_per_s: float | None = None
    eval_it_per_s: float | None = None
    train_samples_per_s: float | None = None
    cpu_busy_elsewhere: float | None = None  # other processes' share of the cores, highest over the run's workers
    # the chosen trial's evaluations and steps ([step, loss, lr]); every trial, with an lr grid
    epochs: list[Epoch] | None = None
    train_log: list[list[float]] | None = None
    trials: list[TrialSummary] | None = None
    # what was chosen on dev
    chosen_epoch: int | None = None
    chosen_step: int | None = None  # the step of the evaluation chosen on dev (within an epoch with --eval-every)
    dev_accuracy: float | None = None
    dev_f1_macro: float | None = None
    dev_loss: float | None = None
    # the scores a run is judged by, and the predictions they come from (in file order)
    predictions: list[int] | None = None
    references: list[int] | None = None
    predictions_split: Literal["test", "eval"] | None = None
    test: TestScores | None = None
    eval_loss: float | None = None
    eval_loss_sum: float | None = None
    accuracy: float | None = None
    f1_macro: float | None = None
    # the saved weights, in DIR/<weights_dir>
    adapter_size_mb: float | None = None
    # what the chosen weights cost at inference (peftbench.run.inference): merged into the base where peft can
    inference_ms_per_example: float | None = None  # median latency of one example at batch 1
    inference_samples_per_s: float | None = None  # over the split at inference_batch_size
    inference_batch_size: int | None = None
    inference_merged: bool | None = None
    weights_dir: str | None = None
    # memory, and what `auto` and the launch resolved to
    peak_memory_mb: float | None = None
    peak_memory_method: str | None = None
    process_peak_rss_mb: float | None = None
    precision_used: str | None = None
    attention_used: str | None = None
    attention_note: str | None = None  # the model refused the kernel asked for, and which one it used
    dropout_masks_used: str | None = None
    split_by_length_used: str | None = None
    processes: int | None = None
    worker_start: str | None = None  # "warm" (forked from a process that had imported the libraries), or "cold"
    global_batch_size: int | None = None
    per_process_batch_size: int | None = None

    def trials_tried(self) -> list[TrialSummary]:
        return self.trials or []


class _Written:
    """A part of a run record that can be written on its own as plain data."""

    def to_dict(self) -> dict[str, Any]:
        plain = _plain(self)
        assert isinstance(plain, dict)
        return plain


@dataclass(kw_only=True)
class RunConfig(_Written):
    """What was asked: the method and its settings, the data and training sections as the grid's config wrote
    them (config.sections.DataConfig and TrainConfig, as data: store.identity hashes them), the model."""

    KEEP_NONE: ClassVar[bool] = True

    model: str
    model_identity: dict[str, Any] | None = None  # version 1 named the model only
    method: str
    method_hyperparameters: dict[str, Any] = field(default_factory=dict)
    peft_config_class: str | None = None
    lr: float | None = None
    preset: str | None = None
    data: dict[str, Any]
    train: dict[str, Any]
    dry_run: bool = False
    select_only: bool = False

    def __post_init__(self) -> None:
        # what every report reads of the training section, whichever version wrote it
        for name, kinds in (
            ("seed", (int,)),
            ("epochs", (int,)),
            ("batch_size", (int,)),
            ("warmup_ratio", (int, float)),
        ):
            value = self.train.get(name)
            if type(value) not in kinds:
                raise ValueError(
                    f"train.{name} must be {'an integer' if kinds == (int,) else 'a number'}, got {value!r}"
                )

    @property
    def seed(self) -> int:
        return int(self.train["seed"])


@dataclass(kw_only=True)
class DataSummary:
    """The data a run saw: where from, its identity, the sizes of its splits and its classes."""

    KEEP_NONE: ClassVar[bool] = True

    source: str
    sha256: str | None = None
    encoding: str | None = None
    rows_read: int | None = None
    rows_dropped_empty_text: int | None = None
    train_examples: int | None = None
    eval_examples: int | None = None
    dev_examples: int | None = None
    test_examples: int | None = None
    label_names: list[str] = field(default_factory=list)
    max_length: int | None = None
    truncated_share: dict[str, float] | None = None
    text_pair: bool | None = None
    dev_source: str | None = None  # --dev-data: the dev set came as a file of its own
    test_source: str | None = None  # --test-data


@dataclass(kw_only=True)
class AutoResolved:
    """What each `auto` setting resolves to on a device, and why the precision did."""

    precision: str
    precision_why: str
    attention: str | None = None
    dropout_masks: str | None = None
    split_by_length: str | None = None


@dataclass(kw_only=True)
class Device:
    """The device a run was made on: a GPU's model and count, or a CPU's model, cores, threads and flags."""

    type: str
    name: str | None = None
    count: int | None = None
    cores: int | None = None
    allowed_cores: int | None = None  # the cores its worker could run on (its affinity)
    torch_threads: int | None = None
    flags: list[str] | None = None
    auto: AutoResolved | None = None


@dataclass(kw_only=True)
class Provenance:
    """Where and how a run was made (store.provenance fills it in the grid process); not the run's identity."""

    KEEP_NONE: ClassVar[bool] = True

    created_utc: str | None = None
    command: list[str] = field(default_factory=list)
    python: str | None = None
    platform: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    git_commit: str | None = None
    git_dirty: bool | None = None
    device: Device | None = None
    execution: dict[str, Any] | None = None


@dataclass(kw_only=True)
class RunRecord(_Written):
    """One run, as its file holds it."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    config: RunConfig
    config_fingerprint: str
    data: DataSummary
    measurement: dict[str, str] = field(default_factory=dict)  # what each figure means, beside the figures
    result: RunResult
    provenance: Provenance = field(default_factory=Provenance)
    # shown before the method's name when runs of several folders are compared; never written
    source_label: str = field(default="", metadata={"written": False})

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def status(self) -> Status:
        return self.result.status


class SchemaError(ValueError):
    """A run file that is JSON but not a run record; its message is one line."""


class OtherVersion(SchemaError):
    """A run record of a schema version this peftbench does not read (a newer one): left alone, not a run."""


def read_record(raw: Any) -> RunRecord:
    """A run record from a file's parsed JSON, migrated to the version written now; SchemaError if it is none."""
    if not isinstance(raw, dict):
        raise SchemaError(f"not a run record but a JSON {type(raw).__name__}")
    version = raw.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise OtherVersion(f"schema version {version!r}, this peftbench reads {', '.join(map(str, READABLE_SCHEMAS))}")
    for old in range(version, SCHEMA_VERSION):
        raw = _MIGRATIONS[old](raw)
    return parse(RunRecord, raw)


def parse(cls: type[T], raw: Any) -> T:
    """A part of a record (or a whole one) from plain data, checked against its types; SchemaError if it fails."""
    import pydantic

    try:
        return checked(cls, raw)
    except pydantic.ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"]))
        raise SchemaError(f"{where}: {problem['msg']} ({exc.error_count()} problem(s))") from None


def _from_version_1(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no model identity (the model is then compared by name), no --select-only and no
    execution; its fields are otherwise version 2's."""
    return {**raw, "schema_version": 2}


_MIGRATIONS = {1: _from_version_1}


def _plain(value: Any) -> Any:
    """JSON-ready data: dataclasses as dicts in field order (None left out, except where a class keeps it),
    enums as their value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        keep_none = getattr(value, "KEEP_NONE", False)
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("written", True) and (keep_none or getattr(value, f.name) is not None)
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value

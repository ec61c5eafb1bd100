"""Typed configuration, grouped by concern; each field's `help` is also its CLI help.

A run's settings come from three layers, later ones winning: the dataclass defaults, a preset
(`PRESETS`), and the options the user typed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError


def _help(text: str, metadata_parse: str | None = None, **kwargs: Any) -> Any:
    """A field with its CLI help; metadata_parse names a parser of PARSERS for values that are not one type."""
    return field(metadata={"help": text, **({"parse": metadata_parse} if metadata_parse else {})}, **kwargs)


AUTO = "auto"


def length_or_auto(text: str) -> int | str:
    """--max-length: a number of tokens, or auto."""
    if str(text).strip().lower() == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a number of tokens or auto, got {text!r}") from None


PARSERS = {"length": length_or_auto}


@dataclass
class DataConfig:
    """Which data, how it is split and how it is tokenised."""

    source: str = _help(
        "builtin:chnsenticorp (the reference data, shipped with peftbench) or a CSV, TSV or JSONL file",
        default="builtin:chnsenticorp",
    )
    text_column: str = _help("column holding the text", default="review")
    text_pair_column: str | None = _help(
        "column holding a second text per example (NLI, matching, question-answer pairs): the tokenizer encodes "
        "the two as a pair. Unset: single texts",
        default=None,
    )
    label_column: str = _help("column holding the label (integers 0..K-1 or strings)", default="label")
    encoding: str = _help(
        "the data file's text encoding; auto: utf-8 (with or without BOM), else gb18030 (GBK), whichever decodes it",
        default="auto",
    )
    test_size: float = _help(
        "fraction held out for evaluation by datasets' train_test_split (the reference's 0.2)", default=0.2
    )
    split_seed: int = _help("seed of the train/eval split (the reference's 123)", default=123)
    dev_size: float | None = _help(
        "fraction held out as a dev set for choosing epoch and learning rate, taken stratified from the held-out "
        "part, which then also becomes stratified; unset: no dev set, evaluate on the held-out part (the reference)",
        default=None,
    )
    max_length: int | str | None = _help(
        "truncate texts to this many tokens (the reference's 86); auto: the smallest length that keeps "
        "--max-length-keep of the training texts whole, capped by the model; unset: the tokenizer's "
        "model_max_length. Every report says which share of texts was truncated",
        default=86, metadata_parse="length",
    )
    max_length_keep: float = _help(
        "with --max-length auto: the share of training texts that must fit whole", default=0.95
    )
    max_train_samples: int | None = _help("use only the first N training examples (quick runs)", default=None)
    max_eval_samples: int | None = _help("use only the first N evaluation examples (quick runs); with a dev set, N of dev and N of test", default=None)

    def validate(self) -> None:
        if not 0.0 < self.test_size < 1.0:
            raise UserError(f"--test-size must be between 0 and 1, got {self.test_size}")
        if self.dev_size is not None and not 0.0 < self.dev_size < self.test_size:
            raise UserError(f"--dev-size must be between 0 and --test-size ({self.test_size}), got {self.dev_size}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if isinstance(self.max_length, str):
            self.max_length = length_or_auto(self.max_length)  # from the Python API or a config file
        if self.max_length not in (None, AUTO) and self.max_length < 2:
            raise UserError(f"--max-length must be at least 2 (room for the special tokens) or auto, got {self.max_length}")
        if not 0.0 < self.max_length_keep <= 1.0:
            raise UserError(f"--max-length-keep must be in (0, 1], got {self.max_length_keep}")


@dataclass
class TrainConfig:
    """The optimisation protocol, shared by every method of a grid."""

    epochs: int = _help("passes over the training data, each followed by an evaluation (reference: 3)", default=3)
    batch_size: int = _help("examples per optimiser step (reference: 64)", default=64)
    eval_batch_size: int | None = _help(
        "examples per evaluation batch; unset: 4 × --batch-size in the fast execution (evaluation keeps no "
        "activations for backward), --batch-size in the reference; eval_loss_sum is always summed over batches "
        "of --batch-size, as the reference did",
        default=None,
    )
    lr: float | None = _help(
        "learning rate for every method (reference: 3e-4); unset: each method's recommended rate", default=3e-4
    )
    warmup_ratio: float = _help("share of steps with linear warm-up before linear decay (reference: 0.06)", default=0.06)
    weight_decay: float = _help("AdamW weight decay (0, as in transformers' Trainer)", default=0.0)
    train_pooler: bool = _help(
        "train the model's pooler (BERT's dense+tanh over [CLS], which BertForSequenceClassification reads) with "
        "the classifier head, for every method; off: PEFT methods keep it frozen and only full fine-tuning (and "
        "BitFit's biases) change it. A no-op for models without a pooler",
        default=False,
    )
    seed: int = _help("seed for the classifier head's init, dropout and shuffling (--seeds runs several)", default=123)
    lr_grid: str | None = _help(
        "comma-separated learning rates to try per method (needs a dev set, --dev-size); the best epoch and rate "
        "on dev are chosen, and the test split is evaluated once, for that choice",
        default=None,
    )
    execution: str = _help(
        "how the protocol is executed: fast (bf16 where native, length-grouped batches that keep class shares, "
        "in random order, eager attention on CPUs, frozen weights in bf16, evaluation sorted by length) or "
        "reference (the reference's: fp32, uniformly shuffled batches, torch's dropout, SDPA attention, "
        "evaluation in file order at the training batch size); each switch below overrides one part of it",
        default="fast",
    )
    precision: str | None = _help(
        "auto: bf16 mixed precision where the hardware computes bf16 natively (CPUs with AVX512-BF16 or AMX, "
        "Ampere+ GPUs), fp16 on older GPUs, else fp32; or fp32 (the reference's), bf16, fp16. Unset: from --execution",
        default=None,
    )
    group_by_length: bool | None = _help(
        "batch examples of similar length together, then shuffle the batches, so training order stays random: "
        "far less padding; off gives the reference's uniformly random batches. Unset: from --execution",
        default=None,
    )
    attention: str | None = _help(
        "attention kernel: auto (eager on CPUs, where torch's fused SDPA backward is slower at these lengths; "
        "sdpa on GPUs), sdpa or eager. Unset: from --execution",
        default=None,
    )
    dropout_masks: str | None = _help(
        "how dropout masks are drawn: auto or torch (torch's own), or lanes (four masks per 64-bit random word: "
        "dropout took ~40% of a bf16 LoRA step on a CPU and lanes cut a step by 30%, but LoRA runs with them "
        "reached ~1 point lower dev accuracy over 3 seeds, so they are opt-in). Unset: from --execution",
        default=None,
    )
    frozen_weights_bf16: bool | None = _help(
        "under bf16, store the frozen weights of a PEFT method in bf16 (trainable ones stay fp32): half the "
        "memory and no cast per step. Unset: from --execution",
        default=None,
    )
    eval_by_length: bool | None = _help(
        "evaluate examples sorted by length (least padding; results are put back in file order) instead of in "
        "file order. Unset: from --execution",
        default=None,
    )

    def __post_init__(self) -> None:
        # The switches left unset take the execution's values, so a config always says what ran.
        if self.execution not in EXECUTIONS:
            raise UserError(f"--execution must be one of {', '.join(EXECUTIONS)}, got {self.execution!r}")
        for name, value in EXECUTIONS[self.execution].items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def eval_batch(self) -> int:
        """Examples per evaluation batch (see eval_batch_size)."""
        if self.eval_batch_size is not None:
            return self.eval_batch_size
        return 4 * self.batch_size if self.execution == "fast" else self.batch_size

    def validate(self) -> None:
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise UserError(f"--eval-batch-size must be at least 1, got {self.eval_batch_size}")
        if self.lr is not None and not (math.isfinite(self.lr) and 0.0 < self.lr < 1.0):
            raise UserError(f"--lr must be a positive number below 1, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0.0):
            raise UserError(f"--weight-decay must be a non-negative number, got {self.weight_decay}")
        for rate in self.learning_rates() or []:
            if not (math.isfinite(rate) and 0.0 < rate < 1.0):
                raise UserError(f"--lr-grid rates must be positive numbers below 1, got {rate}")
        if self.attention not in ("auto", "sdpa", "eager"):
            raise UserError(f"--attention must be auto, sdpa or eager, got {self.attention!r}")
        if self.dropout_masks not in ("auto", "lanes", "torch"):
            raise UserError(f"--dropout-masks must be auto, lanes or torch, got {self.dropout_masks!r}")
        if self.precision not in PRECISIONS + ("auto",):
            raise UserError(f"--precision must be auto or one of {', '.join(PRECISIONS)}, got {self.precision!r}")


    def learning_rates(self) -> list[float] | None:
        if self.lr_grid is None:
            return None
        try:
            rates = [float(v) for v in self.lr_grid.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--lr-grid must be comma-separated numbers, got {self.lr_grid!r}") from None
        if not rates:
            raise UserError("--lr-grid names no learning rate")
        return rates


PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class ScaleConfig:
    """Where the runs execute and how many at once (none of it changes a run's results)."""

    executor: str = _help(
        "local: worker processes on this machine, --workers at a time; ray: each run a Ray task on the cluster "
        "at --ray-address (RAY_ADDRESS), or on a local Ray instance started for the grid (pip install 'peftbench[ray]')",
        default="local",
    )
    workers: str | None = _help(
        "runs at a time on this machine (local executor): a number, or inline (every run in this process, for a "
        "debugger; peak memory then includes earlier runs). On CPUs the cores are divided between them. "
        "Unset: one per visible GPU, 1 on a CPU",
        default=None,
    )
    num_processes: int = _help(
        "processes that train each run data-parallel (torchrun; gloo on CPUs, NCCL on GPUs, one GPU each); each "
        "batch is split between them, so the global batch and the experiment stay those of one process",
        default=1,
    )
    device: str = _help("cpu, cuda or auto (the GPU when there is one)", default="auto")
    shard: str | None = _help(
        "I/N: run only the I-th of N deterministic parts of the grid (one per job of a scheduler's array); "
        "shards may share one --out, and `peftbench report DIR` merges them. Unset: the whole grid",
        default=None,
    )
    claim_timeout: float = _help(
        "seconds after which a claim (DIR/claims/, refreshed every 20 s while its run trains) whose process "
        "stopped refreshing it is stale and may be taken over; a claim of a dead process on this host is stale at once",
        default=300.0,
    )
    ray_address: str | None = _help("Ray cluster to join (ray start --head prints it). Unset: RAY_ADDRESS, else a local instance", default=None)
    ray_num_cpus: float = _help("CPUs a Ray task of a run on CPU asks for (its torch threads)", default=1.0)
    ray_num_gpus: float = _help("GPUs a Ray task of a run on GPU asks for, per process", default=1.0)
    ray_max_retries: int = _help("times Ray runs a task again when its worker process died", default=3)

    def shard_part(self) -> tuple[int, int] | None:
        """(I, N) of --shard I/N, 1-based; None for the whole grid."""
        if self.shard is None:
            return None
        try:
            index, count = (int(v) for v in self.shard.split("/"))
        except ValueError:
            raise UserError(f"--shard must be I/N (e.g. 1/4), got {self.shard!r}") from None
        if not 1 <= index <= count:
            raise UserError(f"--shard I/N needs 1 <= I <= N, got {self.shard!r}")
        return index, count

    def worker_count(self, gpus: int) -> int | None:
        """Runs at a time on this machine; None for inline."""
        if self.workers is None:
            return max(1, gpus // self.num_processes)
        if self.workers == "inline":
            return None
        if self.workers == "process":  # the name of one worker process at a time in earlier versions
            return 1
        try:
            count = int(self.workers)
        except ValueError:
            raise UserError(f"--workers must be a positive number or inline, got {self.workers!r}") from None
        if count < 1:
            raise UserError(f"--workers must be a positive number or inline, got {self.workers!r}")
        return count

    def validate(self) -> None:
        from .executors import EXECUTORS
        from .hardware import DEVICES

        if self.executor not in EXECUTORS:
            raise UserError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.device not in DEVICES:
            raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.num_processes < 1:
            raise UserError(f"--num-processes must be at least 1, got {self.num_processes}")
        if self.workers == "inline" and (self.num_processes > 1 or self.executor != "local"):
            raise UserError("--workers inline runs in this process: it cannot be combined with --num-processes or --executor ray")
        self.worker_count(0)
        self.shard_part()
        if not self.claim_timeout > 0:
            raise UserError(f"--claim-timeout must be a positive number of seconds, got {self.claim_timeout}")
        if self.ray_max_retries < 0 or self.ray_num_cpus <= 0 or self.ray_num_gpus <= 0:
            raise UserError("--ray-max-retries must be >= 0 and --ray-num-cpus, --ray-num-gpus positive")

# The two ways of executing one protocol, named in one place. Execution changes speed and memory, not
# the experiment: it is recorded in provenance and left out of a run's identity (results.protocol).
EXECUTIONS: dict[str, dict[str, Any]] = {
    "fast": {
        "precision": "auto", "group_by_length": True, "attention": "auto", "dropout_masks": "auto",
        "frozen_weights_bf16": True, "eval_by_length": True,
    },
    "reference": {
        "precision": "fp32", "group_by_length": False, "attention": "sdpa", "dropout_masks": "torch",
        "frozen_weights_bf16": False, "eval_by_length": False,
    },
}  # fmt: skip
# Fields of TrainConfig that say how a run was executed, not what was learnt: left out of a run's identity.
EXECUTION_FIELDS = ("execution", "eval_batch_size", *EXECUTIONS["fast"])


@dataclass
class GridConfig:
    """What to compare and where to write it."""

    model: str
    methods: list[str]
    out: Path
    data: DataConfig
    train: TrainConfig
    preset: str = "seed"
    dry_run: bool = False
    seeds: list[int] = field(default_factory=list)  # empty: the one seed of train.seed
    scale: ScaleConfig = field(default_factory=ScaleConfig)  # where the runs execute, how many at once
    # Choose on dev and stop: no test evaluation and no saved weights. For choosing settings (a learning-rate
    # sweep whose choice goes into the registry) without the test split ever being read.
    select_only: bool = False
    # Experiment trackers each finished run is logged to (trackers.TRACKERS): tensorboard, mlflow, trackio.
    report_to: list[str] = field(default_factory=list)

    def run_seeds(self) -> list[int]:
        return self.seeds or [self.train.seed]

    def validate(self) -> None:
        self.data.validate()
        self.train.validate()
        if self.train.lr_grid is not None and self.data.dev_size is None:
            raise UserError("--lr-grid needs a dev set to choose on: add --dev-size (or use --preset tuned)")
        if self.select_only and self.data.dev_size is None:
            raise UserError("--select-only needs a dev set to choose on: add --dev-size (or use --preset tuned)")
        self.scale.validate()
        from .trackers import parse_report_to

        self.report_to = parse_report_to(",".join(self.report_to))
        if self.train.batch_size % self.scale.num_processes:
            raise UserError(f"--batch-size {self.train.batch_size} does not split evenly over --num-processes {self.scale.num_processes}")
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} exists and is not a folder")


# A preset names the values that differ from the dataclass defaults. The defaults already are the
# reference protocol of SPEC.md; "seed" also runs it the reference's way (fp32, uniform batches...), so
# that it reproduces the reference and not merely its settings.
# "tuned" is how the comparison should be done: a stratified 80/10/10 split, each method at its own
# recommended learning rate (lr unset), epoch (and rate, with --lr-grid) chosen on dev, test read once.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "seed": {"data": {}, "train": {"execution": "reference"}},
    "tuned": {"data": {"test_size": 0.2, "dev_size": 0.1}, "train": {"lr": None}},
    # "demo" (`make demo`): tuned, cut to about 11 minutes of a 2-core fp32 CPU for the five seed methods: 512 of
    # the 6,212 training reviews, 192 of the dev and of the test reviews, texts cut at 64 tokens, 3 epochs of
    # batches of 16 (96 steps: the prompt methods need steps more than reviews). Chosen on dev alone
    # (results/demo-selection, --select-only). 384 reviews in batches of 12 (same steps, a quarter less time) was
    # tried too and left prefix tuning at the majority class on one of two seeds, so it was not kept.
    "demo": {
        "data": {"test_size": 0.2, "dev_size": 0.1, "max_train_samples": 512, "max_eval_samples": 192, "max_length": 64},
        "train": {"lr": None, "epochs": 3, "batch_size": 16},
    },
}


def build_section(cls: type, preset_values: dict[str, Any], user_values: dict[str, Any]) -> Any:
    """Instantiate one config section: defaults, then the preset, then what the user typed."""
    names = {f.name for f in dataclasses.fields(cls)}
    merged = {k: v for k, v in preset_values.items() if k in names}
    merged.update({k: v for k, v in user_values.items() if k in names})
    return cls(**merged)


# Options of `peftbench run` whose name is not the config field's: --data sets DataConfig.source.
OPTION_NAMES = {"source": "data"}


def option_name(field_name: str) -> str:
    """The `peftbench run` option of a config field, without the leading --: max_length -> max-length."""
    return OPTION_NAMES.get(field_name, field_name).replace("_", "-")


# Fields left out of a written config file: which part of a grid one job ran is not part of the grid.
NOT_WRITTEN = ("shard",)


def grid_options(grid: GridConfig) -> dict[str, Any]:
    """The grid as `peftbench run` options (names without the leading --): what a config file holds, so
    that `peftbench run --config FILE` builds this very grid again. Unset values are left out."""
    options: dict[str, Any] = {
        "model": grid.model, "methods": ",".join(grid.methods), "preset": grid.preset, "out": str(grid.out),
        "dry-run": grid.dry_run, "select-only": grid.select_only, "report-to": ",".join(grid.report_to) or "none",
    }  # fmt: skip
    if grid.seeds:
        options["seeds"] = ",".join(map(str, grid.seeds))
    for section in (grid.data, grid.train, grid.scale):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is not None and f.name not in NOT_WRITTEN:
                options[option_name(f.name)] = value
    return options


def as_dict(obj: Any) -> Any:
    """JSON-ready form of a config (paths become strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj

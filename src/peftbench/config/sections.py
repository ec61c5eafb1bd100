"""Typed configuration, grouped by concern; each field's `help` is also its CLI help, and its annotation its
parser and choices (config/values.py).

A run's settings come from three layers, later ones winning: the dataclass defaults, a preset
(config/presets.py), and the options the user typed. Values given as text (a config file, the Python API) are
parsed once, when a section is built; `validate()` only checks.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peftbench.config.values import Shard, choices, coerce, item_choices
from peftbench.errors import UserError

Auto = Literal["auto"]
Executor = Literal["local", "ray"]
Device = Literal["auto", "cpu", "cuda"]
Execution = Literal["fast", "reference"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Attention = Literal["auto", "sdpa", "eager"]
DropoutMasks = Literal["auto", "torch", "bulk"]
SplitByLength = Literal["auto", "on", "off"]
Search = Literal["grid", "halving"]
Tracker = Literal["tensorboard", "mlflow", "trackio"]
INLINE = "inline"


def documented(text: str, **kwargs: Any) -> Any:
    """A field with its CLI help."""
    return field(metadata={"help": text}, **kwargs)


def parse_fields(section: Any) -> None:
    """Values given as text become what the field's annotation says (once, where the section is built)."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        try:
            value = coerce(hints[f.name], getattr(section, f.name))
        except ValueError as exc:
            raise UserError(f"{option(f.name)}: {exc}") from None
        object.__setattr__(section, f.name, value)


def check_choices(section: Any) -> None:
    """Every field with named choices holds one of them; a tuple of choices (--report-to), each of its items."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        hint, value = hints[f.name], getattr(section, f.name)
        items = item_choices(hint)
        if items is not None and value is not None:
            for item in value:
                if str(item) not in items:
                    raise UserError(f"{option(f.name)}: expected one of {', '.join(items)}, got {item!r}")
        allowed = choices(hint)
        if allowed is not None and value is not None and str(value) not in allowed:
            raise UserError(f"{option(f.name)} must be one of {', '.join(allowed)}, got {value!r}")


# Options of `peftbench run` whose name is not the config field's: --data sets DataConfig.source.
OPTION_NAMES = {"source": "data"}


SEED_RANGE = (0, 2**32 - 1)  # what numpy's legacy seeding (and so transformers' set_seed) accepts


def check_seed(option_name: str, seed: int) -> None:
    low, high = SEED_RANGE
    if not low <= seed <= high:
        shown = str(seed) if len(str(seed)) <= 20 else f"{str(seed)[:12]}… ({len(str(seed))} digits)"
        raise UserError(f"{option_name} must be between {low} and {high} (numpy's seed range), got {shown}")


def output_folder(name: str | Path, flag: str = "--out") -> Path:
    """The folder results are written to, as given: not empty (Path("") is the working directory), not a
    symbolic link (what is written would land where it points, outside the path named), a folder if it exists.
    The one check behind run's and compare's --out, predict's --merge OUT, config files and the Python API."""
    if not str(name).strip():
        raise UserError(f"{flag} is empty: name the folder the results go to")
    path = Path(name)
    if path.is_symlink():
        raise UserError(f"{flag} {path} is a symbolic link; give the folder it points to, or another one")
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is not a folder")
    return path


def option_name(field_name: str) -> str:
    """The `peftbench run` option of a config field, without the leading --: max_length -> max-length."""
    return OPTION_NAMES.get(field_name, field_name).replace("_", "-")


def option(field_name: str) -> str:
    return "--" + option_name(field_name)


@dataclass
class DataConfig:
    """Which data, how it is split and how it is tokenised."""

    source: str = documented(
        "builtin:chnsenticorp (the reference data, shipped with peftbench) or a CSV, TSV or JSONL file",
        default="builtin:chnsenticorp",
    )
    text_column: str = documented("column holding the text", default="review")
    text_pair_column: str | None = documented(
        "column holding a second text per example (NLI, matching, question-answer pairs): the tokenizer encodes "
        "the two as a pair. Unset: single texts",
        default=None,
    )
    label_column: str = documented("column holding the label (integers 0..K-1 or strings)", default="label")
    encoding: str = documented(
        "the data file's text encoding; auto: utf-8 (with or without BOM), else gb18030 (GBK), whichever decodes it",
        default="auto",
    )
    dev_data: str | None = documented(
        "a file (same columns and encoding as --data) that is the dev set, as a benchmark ships it, instead of one "
        "held out from --data; --data then gives up only the test split (--test-size)",
        default=None,
    )
    test_data: str | None = documented(
        "a file (same columns and encoding as --data) that is the test set, as a benchmark ships it (GLUE's dev "
        "set, when its test labels are hidden), instead of one held out from --data; --data then gives up only "
        "the dev split (--dev-size, a fraction of --data), or none without --dev-size",
        default=None,
    )
    test_size: float = documented(
        "fraction held out for evaluation by datasets' train_test_split (the reference's 0.2)", default=0.2
    )
    split_seed: int = documented("seed of the train/eval split (the reference's 123)", default=123)
    dev_size: float | None = documented(
        "fraction held out as a dev set for choosing epoch and learning rate, taken stratified from the held-out "
        "part, which then also becomes stratified; unset: no dev set, evaluate on the held-out part (the reference)",
        default=None,
    )
    max_length: int | Auto | None = documented(
        "truncate texts to this many tokens (the reference's 86); auto: the smallest length that keeps "
        "--max-length-keep of the training texts whole, capped by the model; unset: the tokenizer's "
        "model_max_length. Every report says which share of texts was truncated",
        default=86,
    )
    max_length_keep: float = documented(
        "with --max-length auto: the share of training texts that must fit whole", default=0.95
    )
    max_train_samples: int | None = documented("use only the first N training examples (quick runs)", default=None)
    max_eval_samples: int | None = documented(
        "use only the first N evaluation examples (quick runs); with a dev set, N of dev and N of test", default=None
    )

    def __post_init__(self) -> None:
        parse_fields(self)

    def has_dev(self) -> bool:
        """Whether there is a dev set to choose on: a file of its own, or one held out of --data."""
        return self.dev_data is not None or self.dev_size is not None

    def validate(self) -> None:
        check_choices(self)
        check_seed("--split-seed", self.split_seed)
        if not 0.0 < self.test_size < 1.0:
            raise UserError(f"--test-size must be between 0 and 1, got {self.test_size}")
        if self.test_data is not None:  # the dev set is then the only part held out of --data
            if self.dev_size is not None and not 0.0 < self.dev_size < 1.0:
                raise UserError(f"--dev-size must be between 0 and 1, got {self.dev_size}")
        elif self.dev_size is not None and not 0.0 < self.dev_size < self.test_size:
            raise UserError(f"--dev-size must be between 0 and --test-size ({self.test_size}), got {self.dev_size}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if isinstance(self.max_length, int) and self.max_length < 2:
            raise UserError(
                f"--max-length must be at least 2 (room for the special tokens) or auto, got {self.max_length}"
            )
        if not 0.0 < self.max_length_keep <= 1.0:
            raise UserError(f"--max-length-keep must be in (0, 1], got {self.max_length_keep}")


def steps_per_epoch(examples: int, batch_size: int) -> int:
    """Optimiser steps of one epoch over `examples` training examples: the loaders keep the last partial batch."""
    return math.ceil(examples / batch_size)


CPU_EVAL_BATCH = 64  # the fast execution's largest evaluation batch on a CPU (TrainConfig.eval_batch)


@dataclass
class TrainConfig:
    """The optimisation protocol, shared by every method of a grid."""

    epochs: int = documented("passes over the training data, each followed by an evaluation (reference: 3)", default=3)
    batch_size: int = documented("examples per optimiser step (reference: 64)", default=64)
    eval_every: int | None = documented(
        "also evaluate on dev every N optimiser steps, not only after each epoch; the epoch and step chosen on "
        "dev are chosen among every evaluation (unset: after each epoch only)",
        default=None,
    )
    patience: int | None = documented(
        "early stopping: end a trial after N evaluations in a row that are not better on dev than the best so "
        "far (needs a dev set; unset: train every epoch)",
        default=None,
    )
    eval_batch_size: int | None = documented(
        "examples per evaluation batch; unset: in the fast execution 4 × --batch-size on a GPU (evaluation keeps "
        "no activations for backward) and at most 64 on a CPU (whose caches then hold a batch's activations), "
        "--batch-size in the reference; eval_loss_sum is always summed over batches of --batch-size, as the "
        "reference did",
        default=None,
    )
    lr: float | None = documented(
        "learning rate for every method (reference: 3e-4); unset: each method's recommended rate", default=3e-4
    )
    warmup_ratio: float = documented(
        "share of steps with linear warm-up before linear decay (reference: 0.06)", default=0.06
    )
    weight_decay: float = documented("AdamW weight decay (0, as in transformers' Trainer)", default=0.0)
    train_pooler: bool = documented(
        "train the model's pooler (BERT's dense+tanh over [CLS], which BertForSequenceClassification reads) with "
        "the classifier head, for every method; off: PEFT methods keep it frozen and only full fine-tuning (and "
        "BitFit's biases) change it. A no-op for models without a pooler",
        default=False,
    )
    seed: int = documented(
        "seed for the classifier head's init, dropout and shuffling (--seeds runs several)", default=123
    )
    lr_grid: tuple[float, ...] | None = documented(
        "comma-separated learning rates to try per method (needs a dev set: --dev-size or --dev-data); the best "
        "epoch and rate on dev are chosen, and the test split is evaluated once, for that choice",
        default=None,
    )
    lr_from: str | None = documented(
        "a folder of earlier runs that chose their rate on dev (with --lr-grid, e.g. --select-only): each method "
        "trains at the rate its run there chose, in place of --lr, so a search is made once and its choices "
        "are then trained over several --seeds; each method needs one run there, or runs that agree",
        default=None,
    )
    search: Search = documented(
        "how the rates of --lr-grid are tried: grid (each for every epoch) or halving (successive halving by "
        "Optuna's SuccessiveHalvingPruner, reduction factor 3, over the dev accuracy at each evaluation: a rate "
        "that is not the best so far at a rung of 1, 3, 9, ... evaluation periods stops there; the first rate "
        "always trains in full, and the choice is made among the rates that trained in full)",
        default="grid",
    )
    execution: Execution = documented(
        "how the protocol is executed: fast (bf16 where native, length-grouped batches that keep class shares, "
        "in random order, eager attention on CPUs, frozen weights in bf16, evaluation sorted by length) or "
        "reference (the reference's: fp32, uniformly shuffled batches, torch's dropout, SDPA attention, "
        "evaluation in file order at the training batch size); each switch below overrides one part of it",
        default="fast",
    )
    precision: Precision | None = documented(
        "auto: bf16 mixed precision where the hardware computes bf16 natively (CPUs with AVX512-BF16 or AMX, "
        "Ampere+ GPUs), fp16 on older GPUs, else fp32; or fp32 (the reference's), bf16, fp16 (bf16 on a CPU without "
        "native bf16 is emulated, many times slower: said before training). Unset: from --execution",
        default=None,
    )
    group_by_length: bool | None = documented(
        "batch examples of similar length together, then shuffle the batches, so training order stays random: "
        "far less padding; off gives the reference's uniformly random batches. Unset: from --execution",
        default=None,
    )
    attention: Attention | None = documented(
        "attention kernel: auto (eager on CPUs, where torch's fused SDPA backward is slower at these lengths; "
        "sdpa on GPUs), sdpa or eager. Unset: from --execution",
        default=None,
    )
    dropout_masks: DropoutMasks | None = documented(
        "how dropout masks are drawn: torch (torch's own), bulk (on CPUs, drawn in bulk from numpy's PCG64 and "
        "kept as one byte per element for backward; torch's own on GPUs), or auto: bulk where a CPU computes in "
        "fp32 (no dev cost over 12 paired seeds there, benchmarks/results/dropout-stream-e5-small), torch's own "
        "elsewhere (in bf16 prompt tuning reached 2 points lower dev accuracy with bulk masks, p 0.003; "
        "dropout-e5-small). Unset: from --execution",
        default=None,
    )
    split_by_length: SplitByLength | None = documented(
        "compute each training batch in two parts of similar lengths (its examples sorted by length, cut where the "
        "fewest padded tokens are computed; the parts' gradients added before the one optimiser step): the same "
        "batch and the same update, with a tenth of the padding that batches keeping class shares need; auto: on "
        "on CPUs, where every padded token costs its share of a step, off on GPUs, where a second pass costs kernel "
        "launches. Unset: from --execution",
        default=None,
    )
    frozen_weights_bf16: bool | None = documented(
        "under bf16, store the frozen weights of a PEFT method in bf16 (trainable ones stay fp32): half the "
        "memory and no cast per step. Unset: from --execution",
        default=None,
    )
    compile: bool = documented(
        "train and evaluate through torch.compile (CUDA graphs on a GPU, mode reduce-overhead), for GPUs where "
        "kernel launches, not math, bound a step; on the CPUs measured a step was slower or barely faster with "
        "it, after a minute or more of compiling, so it is off unless asked",
        default=False,
    )
    eval_by_length: bool | None = documented(
        "evaluate examples sorted by length (least padding; results are put back in file order) instead of in "
        "file order. Unset: from --execution",
        default=None,
    )

    def __post_init__(self) -> None:
        parse_fields(self)
        # The switches left unset take the execution's values, so a config always says what ran.
        if self.execution not in EXECUTIONS:
            raise UserError(f"--execution must be one of {', '.join(EXECUTIONS)}, got {self.execution!r}")
        for name, value in EXECUTIONS[self.execution].items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def eval_batch(self, on_gpu: bool = False) -> int:
        """Examples per evaluation batch (see eval_batch_size)."""
        if self.eval_batch_size is not None:
            return self.eval_batch_size
        if self.execution != "fast":
            return self.batch_size
        # a CPU evaluates fastest in batches whose activations stay in its caches: at 256 e5-small evaluated
        # 0.71x (LoRA) and 0.62x (full) the examples per second of batch 64 (benchmarks/bench_eval.py)
        return 4 * self.batch_size if on_gpu else min(4 * self.batch_size, CPU_EVAL_BATCH)

    def validate(self) -> None:
        check_choices(self)
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        for name in ("eval_every", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise UserError(f"--eval-batch-size must be at least 1, got {self.eval_batch_size}")
        if self.lr is not None and not (math.isfinite(self.lr) and 0.0 < self.lr < 1.0):
            raise UserError(f"--lr must be a positive number below 1, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0.0):
            raise UserError(f"--weight-decay must be a non-negative number, got {self.weight_decay}")
        for rate in self.lr_grid or ():
            if not (math.isfinite(rate) and 0.0 < rate < 1.0):
                raise UserError(f"--lr-grid rates must be positive numbers below 1, got {rate}")

    def learning_rates(self) -> list[float] | None:
        """The rates of --lr-grid, None without one."""
        return list(self.lr_grid) if self.lr_grid is not None else None


@dataclass
class ScaleConfig:
    """Where the runs execute and how many at once (none of it changes a run's results)."""

    executor: Executor = documented(
        "local: worker processes on this machine, --workers at a time; ray: each run a Ray task on the cluster "
        "at --ray-address (RAY_ADDRESS), or on a local Ray instance started for the grid (pip install "
        "'peftbench[ray]')",
        default="local",
    )
    workers: int | Literal["inline"] | None = documented(
        "runs at a time on this machine (local executor): a number, or inline (every run in this process, for a "
        "debugger; peak memory then includes earlier runs). On CPUs the cores are divided between them. "
        "Unset: one per visible GPU, 1 on a CPU",
        default=None,
    )
    num_processes: int = documented(
        "processes that train each run data-parallel (torchrun; gloo on CPUs, NCCL on GPUs, one GPU each); each "
        "batch is split between them, so the global batch and the experiment stay those of one process",
        default=1,
    )
    device: Device = documented("cpu, cuda or auto (the GPU when there is one)", default="auto")
    warm_start: bool = documented(
        "start each worker process forked from one that has already imported torch, transformers and peft "
        "(still a process of its own per run: its own memory, a crash costs that run alone); off: "
        "each a fresh interpreter, 5-9 s of imports a worker on a 2-core CPU. Linux; data-parallel ranks start "
        "fresh either way",
        default=True,
    )
    shard: Shard | None = documented(
        "I/N: run only the I-th of N deterministic parts of the grid (one per job of a scheduler's array); "
        "shards may share one --out, and `peftbench report DIR` merges them. Unset: the whole grid",
        default=None,
    )
    claim_timeout: float = documented(
        "seconds after which a claim (DIR/claims/, refreshed every 20 s while its run trains) whose process "
        "stopped refreshing it is stale and may be taken over; a claim of a dead process on this host is stale at once",
        default=300.0,
    )
    ray_address: str | None = documented(
        "Ray cluster to join (ray start --head prints it). Unset: RAY_ADDRESS, else a local instance", default=None
    )
    ray_num_cpus: float = documented("CPUs a Ray task of a run on CPU asks for (its torch threads)", default=1.0)
    ray_num_gpus: float = documented("GPUs a Ray task of a run on GPU asks for, per process", default=1.0)
    ray_max_retries: int = documented("times Ray runs a task again when its worker process died", default=3)

    def __post_init__(self) -> None:
        if self.workers == "process":  # the name of one worker process at a time in earlier versions
            self.workers = 1
        parse_fields(self)

    @property
    def inline(self) -> bool:
        """Every run in this process (--workers inline)."""
        return self.workers == INLINE

    def validate(self) -> None:
        check_choices(self)
        if isinstance(self.workers, int) and self.workers < 1:
            raise UserError(f"--workers must be a positive number or inline, got {self.workers!r}")
        if self.num_processes < 1:
            raise UserError(f"--num-processes must be at least 1, got {self.num_processes}")
        if self.inline and (self.num_processes > 1 or self.executor != "local"):
            raise UserError(
                "--workers inline runs in this process: it cannot be combined with --num-processes or --executor ray"
            )
        if not self.claim_timeout > 0:
            raise UserError(f"--claim-timeout must be a positive number of seconds, got {self.claim_timeout}")
        if self.ray_max_retries < 0 or self.ray_num_cpus <= 0 or self.ray_num_gpus <= 0:
            raise UserError("--ray-max-retries must be >= 0 and --ray-num-cpus, --ray-num-gpus positive")


# The two ways of executing one protocol, named in one place. Execution changes speed and memory, not
# the experiment: it is recorded in provenance and left out of a run's identity (results.protocol).
EXECUTIONS: dict[str, dict[str, Any]] = {
    "fast": {
        "precision": "auto",
        "group_by_length": True,
        "attention": "auto",
        "dropout_masks": "auto",
        "split_by_length": "auto",
        "frozen_weights_bf16": True,
        "eval_by_length": True,
    },
    "reference": {
        "precision": "fp32",
        "group_by_length": False,
        "attention": "sdpa",
        "dropout_masks": "torch",
        "split_by_length": "off",
        "frozen_weights_bf16": False,
        "eval_by_length": False,
    },
}
# Fields of TrainConfig that say how a run was executed, not what was learnt: left out of a run's identity.
EXECUTION_FIELDS = ("execution", "eval_batch_size", "compile", *EXECUTIONS["fast"])
# Where a run's rate came from is not its experiment: the rate itself (RunConfig.lr) is.
NOT_PROTOCOL_FIELDS = ("lr_from",)


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
    # Experiment trackers each finished run is logged to (reporting/trackers.py).
    report_to: tuple[Tracker, ...] = ()

    def __post_init__(self) -> None:
        self.out = output_folder(self.out)
        parse_fields(self)

    def run_seeds(self) -> list[int]:
        return self.seeds or [self.train.seed]

    def validate(self) -> None:
        self.data.validate()
        self.train.validate()
        for option, asked in (("--lr-grid", self.train.lr_grid is not None), ("--select-only", self.select_only)):
            if asked and not self.data.has_dev():
                raise UserError(
                    f"{option} needs a dev set to choose on: add --dev-size or --dev-data (or --preset tuned)"
                )
        self.scale.validate()
        check_choices(self)
        if self.train.lr_from is not None and self.train.lr_grid is not None:
            raise UserError("--lr-from trains each method at the rate chosen before; --lr-grid chooses anew: give one")
        if self.train.search == "halving" and len(self.train.lr_grid or ()) < 2:
            raise UserError("--search halving chooses among the rates of --lr-grid: give it two rates or more")
        if self.train.search == "halving" and self.scale.num_processes > 1:
            raise UserError("--search halving trains each rate in one process: leave --num-processes at 1")
        if self.train.batch_size % self.scale.num_processes:
            raise UserError(
                f"--batch-size {self.train.batch_size} does not split evenly over --num-processes "
                f"{self.scale.num_processes}"
            )
        for seed in self.run_seeds():
            check_seed("--seeds" if self.seeds else "--seed", seed)
        output_folder(self.out)  # again: the folder may have changed since the grid was built


def as_dict(obj: Any) -> Any:
    """JSON-ready form of a config (paths become strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj

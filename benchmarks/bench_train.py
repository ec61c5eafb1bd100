"""Steady-state training speed: the reference loop as the blog post wrote it, peftbench's own loop, and
Hugging Face's Trainer as a knowledgeable user would set it up.

    python benchmarks/bench_train.py --model NAME_OR_DIR --method lora [--dropout-masks bulk]

There is no quick mode: with 4 timed batches (the --quick of earlier versions) each variant's sampler gave
batches of other lengths at the same positions, and its speedups (3.00, 1.33 vs the Trainer) disagreed with
the full protocol's (2.55, 0.84) on the same CPU and commit. Fewer --samples or --rounds are for tests.

The variants train the same model, method, batch size, max_length and number of examples, in one process,
interleaved (a, b, c, a, b, c, ...) so that drift of the machine cancels out; warm-up steps are left out.
Each variant makes one epoch's batches over the whole training split with its own sampler and times those
that stand for that epoch (at evenly spaced ranks of the tokens they compute: representative_positions), so
that its samples/s stands for its epoch's. Printed per variant: training samples/s, real (non-padding)
tokens/s, the real tokens of a timed example (tok/ex; the epoch's mean is printed above the table), achieved
model FLOP/s as a fraction of a matrix-product peak measured here, peak memory growth during the timed
steps, evaluation samples/s.
Also per variant: the padding share of the tokens computed, the model FLOPs per sample as computed (padding
included), the samples/s the measured peak would allow at those FLOPs ("at peak"), and the fraction reached.
The last lines are `speedup: X.XX`, (b)/(a) in training samples/s, and `speedup_vs_trainer: X.XX`, (b)/(c).

(a) reference: fp32, uniformly random batches padded to the longest, torch's default AdamW, the loss read
    back every step, evaluation at the training batch size.
(b) peftbench: peftbench.run.loop's loaders, optimizer, precision and step function, with its defaults.
(c) transformers.Trainer: bf16 where the machine computes it natively (as `auto` decides), length-grouped
    batches (transformers' LengthGroupedSampler, what train_sampling_strategy group_by_length uses), fused
    AdamW, no evaluation, saving or logging during the timed steps, its default gradient clipping
    (max_grad_norm 1); trainer.train() for warm-up plus timed steps, each step timed by a callback from
    on_step_begin (batch already collated) to on_step_end; evaluation by trainer.evaluate() at the training
    batch size. The sampler puts the longest batch of an epoch first and sorts each group of batches longest
    first, so the first steps of trainer.train() are far longer than an epoch's average: the epoch is made by
    that sampler over the whole split, the chosen batches are given to the Trainer as its training set, and
    it reads them in order (train_sampling_strategy sequential).
"""

from __future__ import annotations

import argparse
import gc
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src"), str(Path(__file__).resolve().parent)]

from peftbench.config.sections import DataConfig, TrainConfig  # noqa: E402
from peftbench.data import load_labeled_texts, split, tokenize  # noqa: E402
from peftbench.hardware import (  # noqa: E402
    length_multiple,
    native_bf16,
    resolve_attention,
    resolve_dropout_masks,
    resolve_precision,
    resolve_split_by_length,
)
from peftbench.methods import REGISTRY  # noqa: E402
from peftbench.models import classifier as models  # noqa: E402
from peftbench.run.dropout import bulk_masks  # noqa: E402
from peftbench.run.loop import (  # noqa: E402
    EXAMPLE_INDEX,
    build_loaders,
    build_optimizer,
    compiled,
    split_by_length,
    store_frozen_weights_in,
    train_step,
)
from peftbench.run.measure import PeakMemory, count_parameters, synchronize  # noqa: E402
from peftbench.run.worker import PRECISION_TO_ACCELERATE  # noqa: E402


def matmul_peak_flops(dtype: torch.dtype, device: torch.device, size: int, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def measured_peaks(precisions: set[str], device: torch.device, size: int) -> dict[str, float | None]:
    """The matmul peak of each precision a variant runs at. bf16 on a CPU without AVX512-BF16/AMX has none worth
    the name: it is emulated, and the probe's square product takes a slower path than the model's linear layers
    (1 GFLOP/s against the loop's 3.5 on the AVX2-only EPYC: 348% of "peak",
    benchmarks/results/bench_train-lora-avx2-bf16-emulated.txt), so None, and a minute of probing saved."""
    dtypes = {
        "fp32": torch.float32,
        "bf16": torch.bfloat16,
        "fp16": torch.float16 if device.type == "cuda" else torch.float32,
    }
    return {
        name: None
        if name == "bf16" and device.type == "cpu" and not native_bf16(device)
        else matmul_peak_flops(dtypes[name], device, size)
        for name in sorted(precisions)
    }


def peak_cells(peak: float | None, flops_per_sample: float, achieved: float) -> str:
    """The table's "at peak" (samples/s at the measured peak) and "%peak" cells; dashes where there is no peak."""
    if peak is None:
        return f"{'-':>8} {'-':>7}"
    return f"{peak / flops_per_sample:8.1f} {100 * achieved / peak:6.1f}%"


def peak_line(peaks: dict[str, float | None]) -> str:
    shown = (
        f"{name} {peak / 1e9:.0f} GFLOP/s" if peak is not None else f"{name} emulated (no AVX512-BF16 or AMX): none"
        for name, peak in peaks.items()
    )
    return "measured matmul peak: " + ", ".join(shown)


def _tokens(batch: dict[str, Any]) -> int:
    """The tokens a batch computes in one pass, padding included."""
    return batch["input_ids"].numel()


@dataclass
class Built:
    model: Any
    loader: DataLoader
    eval_loader: DataLoader
    step: Any  # callable(batch) -> None
    context: Any  # callable() -> context manager for evaluation forward passes
    computed: Any = _tokens  # callable(batch) -> the tokens a step computes, padding included


@dataclass
class Variant:
    name: str
    build: Any  # callable() -> Built; a fresh model each round, so memory is measured from the same baseline
    precision: str
    rounds: list[dict[str, float]] = field(default_factory=list)


def representative_positions(costs: list[int], warmup_steps: int, timed_steps: int) -> list[int]:
    """Positions among an epoch's batches to run, warm-up first. The timed ones stand for the epoch: the batches
    at evenly spaced ranks of their cost (tokens computed), the 5th, 15th, ..., 95th percentile for 10, in a
    seeded shuffled order; the warm-up ones a seeded random choice of the others. Each variant's sampler puts
    batches of other lengths at a given position, so the same positions for every variant timed batches of
    other lengths (at b960f2e, (b) 61.6 and (c) 57.0 real tokens a review) and a samples/s that was not the
    epoch's; batches taken by rank give each variant its own epoch's mix of lengths."""
    generator = torch.Generator().manual_seed(0)
    ranked = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    timed = [ranked[int((k + 0.5) * len(ranked) / timed_steps)] for k in range(timed_steps)]
    rest = sorted(set(range(len(costs))) - set(timed))
    warmup = [rest[i] for i in torch.randperm(len(rest), generator=generator)[:warmup_steps].tolist()]
    return warmup + [timed[i] for i in torch.randperm(timed_steps, generator=generator).tolist()]


def run_round(variant: Variant, device: torch.device, warmup_steps: int, timed_steps: int) -> None:
    meter = PeakMemory(device)
    meter.start()  # before the model exists: the peak covers weights, optimizer state and activations
    built = variant.build()
    built.model.train()
    # One epoch's batches over the whole training split, as a real run would see them (length grouping
    # drawn from a pool of a few hundred examples only would pad far more than it does in a run), of which
    # those that stand for the epoch are run. Collation stays out of timing.
    epoch = list(built.loader)
    positions = representative_positions([built.computed(b) for b in epoch], warmup_steps, timed_steps)
    batches = [epoch[i] for i in positions]
    del epoch
    for batch in batches[:warmup_steps]:
        built.step(batch)
    timed = batches[warmup_steps:]
    synchronize(device)
    started = time.perf_counter()
    for batch in timed:
        built.step(batch)
    synchronize(device)
    elapsed = time.perf_counter() - started
    built.model.eval()
    eval_batches = list(built.eval_loader)
    synchronize(device)
    eval_started = time.perf_counter()
    with torch.inference_mode(), built.context():
        for batch in eval_batches:
            inputs = {k: v for k, v in batch.items() if k not in ("labels", EXAMPLE_INDEX)}
            built.model(**inputs).logits.float().argmax(-1).tolist()
    synchronize(device)
    eval_elapsed = time.perf_counter() - eval_started
    variant.rounds.append(
        {
            "samples_per_s": sum(len(b["labels"]) for b in timed) / elapsed,
            "real_tokens_per_s": sum(int(b["attention_mask"].sum()) for b in timed) / elapsed,
            "padded_tokens_per_s": sum(built.computed(b) for b in timed) / elapsed,
            "peak_memory_mb": meter.peak_mb(),
            "eval_samples_per_s": sum(len(b["input_ids"]) for b in eval_batches) / eval_elapsed,
        }
    )
    del built, batches, timed, eval_batches
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _StepClock:
    """Hooks of a transformers TrainerCallback: each optimiser step from on_step_begin (its batch already
    fetched and collated) to on_step_end, so collation stays out of timing as it does for (a) and (b)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.began = device, 0.0
        self.durations: list[float] = []

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        synchronize(self.device)
        self.began = time.perf_counter()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        synchronize(self.device)
        self.durations.append(time.perf_counter() - self.began)


def run_trainer_round(variant: Variant, device: torch.device, warmup_steps: int, timed_steps: int) -> None:
    """(c): Trainer.train() for warm-up + timed steps; the collated batches are recorded by the collator."""
    meter = PeakMemory(device)
    meter.start()
    trainer, clock, collated = variant.build(warmup_steps + timed_steps)
    trainer.train()
    timed = collated[warmup_steps : warmup_steps + timed_steps]
    elapsed = sum(clock.durations[warmup_steps:])
    evaluated = trainer.evaluate()
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)  # saves nothing (save_strategy no), but made it
    variant.rounds.append(
        {
            "samples_per_s": sum(len(b["labels"]) for b in timed) / elapsed,
            "real_tokens_per_s": sum(int(b["attention_mask"].sum()) for b in timed) / elapsed,
            "padded_tokens_per_s": sum(_tokens(b) for b in timed) / elapsed,
            "peak_memory_mb": meter.peak_mb(),
            "eval_samples_per_s": evaluated["eval_samples_per_second"],
        }
    )
    del trainer, collated
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _memory_in_own_process(letter: str, args: argparse.Namespace, samples: int) -> float:
    command = [
        sys.executable,
        __file__,
        "--model",
        args.model,
        "--method",
        args.method,
        "--batch-size",
        str(args.batch_size),
        "--samples",
        str(min(samples, 4 * args.batch_size)),
        "--max-length",
        str(args.max_length),
        "--precision",
        args.precision,
        "--dropout-masks",
        args.dropout_masks,
        "--split-by-length",
        args.split_by_length,
        "--memory-of",
        letter,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1].split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--method", default="lora", choices=sorted(REGISTRY))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, help="timed training examples per round", default=640)
    parser.add_argument("--rounds", type=int, help="interleaved rounds per variant", default=3)
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before each variant's first round")
    parser.add_argument("--max-length", type=int, default=86)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--precision",
        default="auto",
        help="of the peftbench loop: auto, or fp32 for what a CPU without AVX512-BF16/AMX runs",
    )
    parser.add_argument(
        "--dropout-masks",
        default="auto",
        choices=["auto", "torch", "bulk"],
        help="of the peftbench loop: how its dropout masks are drawn (peftbench run's --dropout-masks)",
    )
    parser.add_argument(
        "--split-by-length",
        default="auto",
        choices=["auto", "on", "off"],
        help="of the peftbench loop: each batch computed in two parts of similar lengths (peftbench run's option)",
    )
    parser.add_argument(
        "--compile",
        default="off",
        choices=["on", "off"],
        help="of the peftbench loop: through torch.compile as peftbench run's --compile (compiling falls in the "
        "warm-up steps; each new batch length compiles again)",
    )
    parser.add_argument(
        "--memory",
        choices=["process", "round"],
        default="process",
        help="peak memory of each variant measured in a process of its own (exact), or during its rounds in this one "
        "(quicker; on a CPU an earlier variant's freed memory can hide part of a later one's peak)",
    )
    parser.add_argument(
        "--variants",
        default="abc",
        help="which variants to run, e.g. b alone (benchmarks/bench_options.py times b under settings)",
    )
    parser.add_argument(
        "--memory-of", choices=["a", "b", "c"], help=argparse.SUPPRESS
    )  # internal: one variant, fresh process
    args = parser.parse_args()
    samples, rounds, warmup_steps = args.samples, args.rounds, args.warmup_steps

    from accelerate import Accelerator
    from transformers import get_constant_schedule

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = models.resolve(args.model)
    tokenizer = models.load_tokenizer(name)
    model_config = models.load_config(name)
    models.configure_padding(tokenizer, model_config)
    parts = split(load_labeled_texts(DataConfig()), DataConfig(max_eval_samples=min(samples, 512)))
    timed_steps = math.ceil(samples / args.batch_size)
    train = tokenize(tokenizer, parts.train, args.max_length)
    eval_ = tokenize(tokenizer, parts.eval, args.max_length)
    lengths = [len(e["input_ids"]) for e in train]  # real tokens of each training review
    collator = models.Collator(tokenizer, models.is_decoder(model_config))
    method = REGISTRY[args.method]
    labels = parts.train.label_names
    config = TrainConfig(
        batch_size=args.batch_size,
        precision=args.precision,
        dropout_masks=args.dropout_masks,
        split_by_length=args.split_by_length,
        compile=args.compile == "on",
    )
    precision = resolve_precision(config.precision, device)
    attention = resolve_attention(config.attention, device)
    dropout_masks = resolve_dropout_masks(config.dropout_masks, device, precision)
    split_steps = resolve_split_by_length(config.split_by_length, device) == "on"
    from accelerate.utils import DataLoaderConfiguration

    # as the worker: non-blocking copies from pinned memory on a GPU
    loading = DataLoaderConfiguration(non_blocking=device.type == "cuda")
    accelerator = Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[precision], dataloader_config=loading)

    def fresh_model(attention_kernel: str | None) -> Any:
        torch.manual_seed(0)
        return method.build(models.load_classifier(name, len(labels), labels, tokenizer.pad_token_id, attention_kernel))

    def build_reference() -> Built:
        """(a) the reference loop: transformers' default attention, fp32, torch's default AdamW."""
        model = fresh_model(None).to(device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)

        def step(batch: dict[str, Any]) -> None:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss.item()  # the post logged the loss of every step

        generator = torch.Generator().manual_seed(0)
        loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=collator, generator=generator)
        eval_loader = DataLoader(eval_, batch_size=args.batch_size, collate_fn=collator)
        return Built(model, loader, eval_loader, step, nullcontext)

    def build_peftbench() -> Built:
        """(b) peftbench's loop: its loaders, optimizer, precision, attention and step, with their defaults."""
        accelerator.free_memory()
        model = fresh_model(attention)
        if precision == "bf16" and config.frozen_weights_bf16:
            store_frozen_weights_in(model, torch.bfloat16)
        # as the worker and the loop: batch lengths in multiples of 16 and pinned memory on a GPU
        collate_b = models.Collator(tokenizer, models.is_decoder(model_config), length_multiple(device))
        train_loader, eval_loader = build_loaders(train, eval_, collate_b, config, device.type == "cuda")
        optimizer = build_optimizer(model, config, args.lr, accelerator.device)
        scheduler = get_constant_schedule(optimizer)
        model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
            model, optimizer, train_loader, eval_loader, scheduler
        )
        model = compiled(model, config, device)

        def step(batch: dict[str, Any]) -> None:
            with bulk_masks(dropout_masks == "bulk"):
                train_step(model, batch, optimizer, scheduler, accelerator, split=split_steps)

        def computed(batch: dict[str, Any]) -> int:
            return sum(_tokens(part) for part in split_by_length(batch)) if split_steps else _tokens(batch)

        return Built(model, train_loader, eval_loader, step, accelerator.autocast, computed)

    trainer_precision = resolve_precision("auto", device)  # bf16 where native: what a user who knows would set

    def trainer_epoch_examples(steps: int) -> list[int]:
        """The examples of the batches that the Trainer's group_by_length sampler makes of an epoch over the whole
        split, those that stand for the epoch (representative_positions), in the order they are run."""
        from transformers.trainer_pt_utils import LengthGroupedSampler

        order = list(LengthGroupedSampler(args.batch_size, lengths=lengths, generator=torch.Generator().manual_seed(0)))
        # full batches only: the Trainer reads the chosen examples in order, so a short batch would shift the rest
        batches = [order[i : i + args.batch_size] for i in range(0, len(order) - args.batch_size + 1, args.batch_size)]
        padded = [len(batch) * max(lengths[i] for i in batch) for batch in batches]  # padded to its longest
        chosen = representative_positions(padded, warmup_steps, steps - warmup_steps)
        return [i for position in chosen for i in batches[position]]

    def build_trainer(steps: int) -> tuple[Any, _StepClock, list[dict[str, Any]]]:
        """(c) transformers.Trainer with the settings a knowledgeable user picks on this machine."""
        from datasets import Dataset
        from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

        model = fresh_model(attention)
        collated: list[dict[str, Any]] = []

        def collate(features: list[dict[str, Any]]) -> Any:
            batch = collator(features)
            collated.append(batch)
            return batch

        clock = _StepClock(device)
        callback = type(
            "StepClock", (TrainerCallback,), {"on_step_begin": clock.on_step_begin, "on_step_end": clock.on_step_end}
        )()
        arguments = TrainingArguments(
            output_dir=str(Path(tempfile.mkdtemp(prefix="bench-trainer-"))),
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            learning_rate=args.lr,
            max_steps=steps,
            lr_scheduler_type="constant",
            bf16=trainer_precision == "bf16",
            fp16=trainer_precision == "fp16",
            optim="adamw_torch_fused",
            train_sampling_strategy="sequential",
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=device.type == "cpu",
            seed=0,
        )
        chosen = [train[i] for i in trainer_epoch_examples(steps)]
        columns = {k: [e[k] for e in chosen] for k in chosen[0]}
        eval_columns = {k: [e[k] for e in eval_] for k in eval_[0]}
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=Dataset.from_dict(columns),
            eval_dataset=Dataset.from_dict(eval_columns),
            data_collator=collate,
            callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)  # its dict of train/eval metrics would break this script's table
        return trainer, clock, collated

    every = {
        "a": Variant("a: reference loop", build_reference, "fp32"),
        "b": Variant("b: peftbench loop", build_peftbench, precision),
        "c": Variant("c: HF Trainer", build_trainer, trainer_precision),
    }
    if not set(args.variants) <= set(every) or not args.variants:
        parser.error(f"--variants takes letters of abc, got {args.variants!r}")
    variants = {letter: every[letter] for letter in sorted(set(args.variants))}
    rounders = {"a": run_round, "b": run_round, "c": run_trainer_round}
    if args.memory_of:
        # On a CPU the resident-set peak of a process cannot tell apart memory freed by an earlier variant,
        # so each variant's memory is measured in a process of its own.
        variant = every[args.memory_of]
        rounders[args.memory_of](variant, device, warmup_steps, timed_steps)
        print(f"peak_memory_mb {variant.rounds[0]['peak_memory_mb']:.1f}")
        return

    probe = fresh_model(None)
    total, trainable = count_parameters(probe)
    embedding_params = sum(p.numel() for n, p in probe.named_parameters() if "embeddings" in n)
    del probe
    # Training FLOPs per token: forward 2N; backward 2N for activation gradients, plus 2N for weight
    # gradients only where weights are trained (full fine-tuning). Attention scores are left out.
    flops_per_token = (6 if trainable > total // 2 else 4) * (total - embedding_params)
    peak_size = 4096 if device.type == "cuda" else 1536
    peaks = measured_peaks({v.precision for v in variants.values()}, device, peak_size)  # those the variants run at

    from bench_scale import machine

    print(machine())  # the CPU model and its AVX2 / AVX512-BF16 / AMX flags, what auto resolved to
    print(
        f"model {args.model} ({total:,} parameters, {trainable:,} trainable with {args.method}), device {device.type}"
    )
    print(
        f"peftbench loop: precision {precision}, attention {attention}, dropout masks {dropout_masks}, "
        f"length-grouped batches {config.group_by_length}, split by length {'on' if split_steps else 'off'}"
    )
    print(
        f"{samples} timed training examples per round (batches drawn from an epoch over all {len(train)}), "
        f"batch {args.batch_size}, {rounds} round(s) per variant, {warmup_steps} warm-up step(s); the timed batches "
        f"stand for the epoch (its 5th-95th percentiles of tokens computed); the epoch's reviews hold "
        f"{statistics.mean(lengths):.1f} real tokens each"
    )
    print(peak_line(peaks))
    for _ in range(rounds):
        for letter, variant in variants.items():  # interleaved, so drift of the machine hits all alike
            rounders[letter](variant, device, warmup_steps, timed_steps)

    print(
        f"{'variant':20} {'samples/s':>10} {'real tok/s':>11} {'pad %':>6} {'GFLOP/sample':>13} {'at peak':>8} "
        f"{'%peak':>7} {'peak MB':>8} {'eval samples/s':>15} {'tok/ex':>6} precision"
    )
    summary = {}
    for letter, variant in variants.items():
        median = {k: statistics.median(r[k] for r in variant.rounds) for k in variant.rounds[0]}
        if args.memory == "process":
            median["peak_memory_mb"] = _memory_in_own_process(letter, args, samples)
        summary[letter] = median
        achieved = median["padded_tokens_per_s"] * flops_per_token
        # model FLOPs of one sample as computed (its padding included), and the samples/s at the measured peak
        flops_per_sample = achieved / median["samples_per_s"]
        padding = 1 - median["real_tokens_per_s"] / median["padded_tokens_per_s"]
        print(
            f"{variant.name:20} {median['samples_per_s']:10.2f} {median['real_tokens_per_s']:11.0f} "
            f"{100 * padding:5.1f}% {flops_per_sample / 1e9:13.2f} "
            f"{peak_cells(peaks[variant.precision], flops_per_sample, achieved)} {median['peak_memory_mb']:8.0f} "
            f"{median['eval_samples_per_s']:15.1f} {median['real_tokens_per_s'] / median['samples_per_s']:6.1f} "
            f"{variant.precision}"
        )
    b = summary.get("b")
    for name, other in (("b/a", summary.get("a")), ("b/c", summary.get("c"))):
        if b is None or other is None:
            continue
        print(
            f"ratio {name}: samples/s {b['samples_per_s'] / other['samples_per_s']:.2f}, "
            f"real tokens/s {b['real_tokens_per_s'] / other['real_tokens_per_s']:.2f}, "
            f"eval samples/s {b['eval_samples_per_s'] / other['eval_samples_per_s']:.2f}, "
            f"peak memory {b['peak_memory_mb'] / max(other['peak_memory_mb'], 1e-9):.2f}"
        )
    for line, other in (("speedup", summary.get("a")), ("speedup_vs_trainer", summary.get("c"))):
        if b is not None and other is not None:
            print(f"{line}: {b['samples_per_s'] / other['samples_per_s']:.2f}")


if __name__ == "__main__":
    main()

"""What else could make a CPU training step faster: the options of issue 14, each measured on this machine.

    python benchmarks/bench_options.py --model NAME_OR_DIR [--quick] [--runs results/demo-fresh-clone]

1. Threads and allocator: bench_train.py's variant (b), peftbench's loop, alone in a fresh process for each
   setting (torch's threads = the cores or 1; glibc's malloc, jemalloc or tcmalloc through LD_PRELOAD where
   the library is installed), LoRA and full fine-tuning, settings interleaved round by round. Printed:
   samples/s and its ratio to the default (glibc, threads = cores).
2. Packing: packing sequences end to end removes padding and nothing else, so the padding share of an
   epoch's batches (real tokens against the tokens computed) bounds what it could give. Printed for
   peftbench's length groups, the reference's random batches and the Trainer's group_by_length sampler.
3. Frozen work: one step taken apart (forward, backward, optimizer) for LoRA and full fine-tuning on the
   same batches, and the same steps with dropout off. A frozen layer needs no weight gradient, only the
   gradient of its input (for the trainable layers below it): backward/forward near 1 for LoRA, against
   near 2 for full fine-tuning, says that autograd already skips what frozen layers do not need.
4. Evaluation: the share of each run's time spent evaluating (per-epoch dev and the final test), read from a
   folder of finished runs.
5. Dropout masks: what part 3's dropout share is made of. One mask the size of a layer's hidden states (batch x
   max_length x hidden), drawn by torch's dropout (`bernoulli_`: on CPUs PyTorch takes MKL's vectorised
   generator only when the CPU's vendor is Intel, and draws element by element elsewhere), by a uniform draw
   compared with p (`rand_like`: the same distribution), and by peftbench's bulk masks (`--dropout-masks bulk`).

Every figure is printed with the CPU it ran on (model name, AVX2 / AVX512-BF16 / AMX flags).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from peftbench.config.sections import DataConfig, TrainConfig  # noqa: E402
from peftbench.data import load_labeled_texts, split, tokenize  # noqa: E402
from peftbench.hardware import describe, resolve_attention, resolve_precision  # noqa: E402
from peftbench.methods import REGISTRY  # noqa: E402
from peftbench.models import classifier as models  # noqa: E402
from peftbench.run.loop import EXAMPLE_INDEX, build_loaders, build_optimizer  # noqa: E402

ALLOCATORS = {  # LD_PRELOAD libraries of Debian/Ubuntu's libjemalloc2 and libtcmalloc-minimal4
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
}


def cpu_line() -> str:
    """The CPU and what `auto` resolves to on it, as every run's provenance records them (peftbench.hardware)."""
    cpu = describe(torch.device("cpu"))
    return (
        f"{cpu['name']}, {cpu['cores']} cores, flags: {' '.join(cpu['flags']) or 'none of avx2/avx512/amx'}, auto "
        f"-> {cpu['auto']['precision']}"
    )


# --- 1. threads and allocator -------------------------------------------------------------------------------


def settings() -> dict[str, dict[str, str]]:
    """Environment of each setting; the first is the default every ratio is against."""
    cores = str(len(os.sched_getaffinity(0)))
    found = {"default (glibc malloc, threads = cores)": {"OMP_NUM_THREADS": cores}}
    found["1 thread"] = {"OMP_NUM_THREADS": "1"}
    for name, library in ALLOCATORS.items():
        if Path(library).exists():
            found[name] = {"OMP_NUM_THREADS": cores, "LD_PRELOAD": library}
    return found


def time_variant_b(model: str, method: str, env: dict[str, str], samples: int) -> dict[str, float]:
    """bench_train.py's (b) in a process of its own, under env: its samples/s and real tokens/s."""
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_train.py"),
        "--model",
        model,
        "--method",
        method,
        "--variants",
        "b",
        "--rounds",
        "1",
        "--samples",
        str(samples),
        "--memory",
        "round",
    ]
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_train.py failed under {env}: {done.stderr.strip().splitlines()[-1:]}")
    row = next(line for line in done.stdout.splitlines() if line.startswith("b: peftbench loop"))
    fields = row[len("b: peftbench loop") :].split()
    return {"samples_per_s": float(fields[0]), "real_tokens_per_s": float(fields[1])}


def threads_and_allocators(args: argparse.Namespace) -> None:
    chosen = settings()
    missing = [name for name, library in ALLOCATORS.items() if not Path(library).exists()]
    print("\n1. threads and allocator: bench_train.py (b) alone, fresh process per setting")
    if missing:
        print(
            f"   not installed here, left out: {', '.join(missing)} (apt-get install libjemalloc2 libtcmalloc-minimal4)"
        )
    for method in args.methods:
        measured: dict[str, list[float]] = {name: [] for name in chosen}
        for _ in range(args.rounds):
            for name, env in chosen.items():  # interleaved: drift of the machine hits every setting alike
                measured[name].append(time_variant_b(args.model, method, env, args.samples)["samples_per_s"])
        default = statistics.median(next(iter(measured.values())))
        for name, values in measured.items():
            median = statistics.median(values)
            print(
                f"   {method:5} {name:42} {median:7.2f} samples/s  ratio {median / default:.2f}  (rounds: "
                f"{', '.join(f'{v:.2f}' for v in values)})"
            )


# --- shared by 2 and 3 -------------------------------------------------------------------------------------


def load(args: argparse.Namespace) -> dict[str, Any]:
    name = models.resolve(args.model)
    tokenizer = models.load_tokenizer(name)
    model_config = models.load_config(name)
    models.configure_padding(tokenizer, model_config)
    parts = split(load_labeled_texts(DataConfig()), DataConfig(max_eval_samples=64))
    train = tokenize(tokenizer, parts.train, args.max_length)
    collator = models.Collator(tokenizer, models.is_decoder(model_config))
    return {
        "name": name,
        "tokenizer": tokenizer,
        "train": train,
        "collator": collator,
        "labels": parts.train.label_names,
    }


# --- 2. packing ----------------------------------------------------------------------------------------------


def label_skew(batches: list[dict[str, Any]], batch_size: int) -> float:
    """Mean over full batches of the total variation distance between a batch's class shares and the split's:
    what grouping by length costs in label balance (for two classes, |batch positive share - split's|)."""
    labels = torch.cat([b["labels"] for b in batches])
    classes = int(labels.max()) + 1
    split = torch.bincount(labels, minlength=classes).double() / len(labels)
    full = [b["labels"] for b in batches if len(b["labels"]) == batch_size]
    shares = [torch.bincount(b, minlength=classes).double() / len(b) for b in full]
    return float(torch.stack([0.5 * (s - split).abs().sum() for s in shares]).mean())


def padding_share(batches: list[dict[str, Any]]) -> tuple[float, float]:
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    computed = sum(b["input_ids"].numel() for b in batches)
    return 1 - real / computed, real / sum(len(b["input_ids"]) for b in batches)


def packing(loaded: dict[str, Any], args: argparse.Namespace) -> None:
    from torch.utils.data import DataLoader
    from transformers.trainer_pt_utils import LengthGroupedSampler

    train, collator = loaded["train"], loaded["collator"]
    config = TrainConfig(batch_size=args.batch_size)
    grouped, _ = build_loaders(train, train[:1], collator, config)
    random_batches = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, collate_fn=collator, generator=torch.Generator().manual_seed(0)
    )
    lengths = [len(e["input_ids"]) for e in train]
    sampler = LengthGroupedSampler(args.batch_size, lengths=lengths, generator=torch.Generator().manual_seed(0))
    trainer_batches = DataLoader(train, batch_size=args.batch_size, sampler=sampler, collate_fn=collator)
    print(
        f"\n2. packing: padding in one epoch over all {len(train)} training examples, batch {args.batch_size}, "
        f"max_length {args.max_length}"
    )
    for name, loader in (
        ("peftbench length groups", grouped),
        ("reference random batches", random_batches),
        ("Trainer group_by_length", trainer_batches),
    ):
        batches = list(loader)
        share, mean_tokens = padding_share(batches)
        print(
            f"   {name:26} padding {share:6.1%} of tokens computed; packing could save at most {1 / (1 - share):.3f}x "
            f"(mean {mean_tokens:.1f} real tokens a review); label skew {label_skew(batches, args.batch_size):.3f}"
        )
    print(
        "   (label skew: mean distance of a batch's class shares from the split's. Batches that keep each class's "
        "share can pad no less than the length distributions of the classes differ: a batch at length rank r "
        "pads every class to the longest class's length at that rank)"
    )


# --- 3. frozen work ------------------------------------------------------------------------------------------


def timed_parts(model: Any, optimizer: Any, batches: list[dict[str, Any]], autocast: Any) -> dict[str, float]:
    """Seconds per step in forward, backward and the optimizer, summed over the batches (the first one is warm-up)."""
    parts = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for i, batch in enumerate(batches):
        inputs = {k: v for k, v in batch.items() if k != EXAMPLE_INDEX}
        started = time.perf_counter()
        with autocast():
            loss = model(**inputs).loss
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        if i > 0:
            parts["forward"] += forward - started
            parts["backward"] += backward - forward
            parts["optimizer"] += done - backward
    return {k: v / (len(batches) - 1) for k, v in parts.items()}


def frozen_work(loaded: dict[str, Any], args: argparse.Namespace) -> None:
    from accelerate import Accelerator

    from peftbench.run.worker import PRECISION_TO_ACCELERATE

    device = torch.device("cpu")
    config = TrainConfig(batch_size=args.batch_size)
    precision, attention = resolve_precision(config.precision, device), resolve_attention(config.attention, device)
    accelerator = Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[precision], cpu=True)
    loader, _ = build_loaders(loaded["train"], loaded["train"][:1], loaded["collator"], config)
    epoch = list(loader)
    chosen = torch.randperm(len(epoch), generator=torch.Generator().manual_seed(0))[: args.steps + 1].tolist()
    batches = [epoch[i] for i in chosen]
    print(
        f"\n3. frozen work: one step taken apart, {args.steps} steps of {args.batch_size} (+1 warm-up), precision "
        f"{precision}, attention {attention}"
    )
    for method in args.methods:
        for dropout in (True, False):
            torch.manual_seed(0)
            base = models.load_classifier(
                loaded["name"], len(loaded["labels"]), loaded["labels"], loaded["tokenizer"].pad_token_id, attention
            )
            model = REGISTRY[method].build(base)
            optimizer = build_optimizer(model, config, 1e-4, device)
            model.train()
            if not dropout:  # every dropout module in eval mode: the step without its masks
                for module in model.modules():
                    if isinstance(module, torch.nn.Dropout):
                        module.eval()
            parts = timed_parts(model, optimizer, batches, accelerator.autocast)
            step = sum(parts.values())
            print(
                f"   {method:5} dropout {'on ' if dropout else 'off'}  step {step:.3f} s: forward "
                f"{parts['forward']:.3f}, "
                f"backward {parts['backward']:.3f} ({parts['backward'] / parts['forward']:.2f}x forward), optimizer "
                f"{parts['optimizer']:.3f}"
            )
            del model, base, optimizer


# --- 4. evaluation -------------------------------------------------------------------------------------------


def evaluation_cost(folder: Path) -> None:
    print(f"\n4. evaluation: share of each run's time spent evaluating ({folder})")
    runs = sorted((folder / "runs").glob("*.json"))
    if not runs:
        print("   no runs there")
        return
    for path in runs:
        record = json.loads(path.read_text(encoding="utf-8"))
        result, train = record["result"], TrainConfig(**record["config"]["train"])
        eval_s, total_s = result.get("eval_time_s", 0.0), result.get("total_time_s", 0.0)
        if total_s:
            print(
                f"   {path.stem:28} evaluating {eval_s:6.1f} s of {total_s:6.1f} s ({eval_s / total_s:5.1%}); "
                f"{train.epochs} dev evaluations and one test, evaluation batch {train.eval_batch()}"
            )


# --- 5. dropout masks ---------------------------------------------------------------------------------------


def rand_dropout(input: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout with its mask from a uniform draw compared with p: torch's distribution, another random stream."""
    return input * (torch.rand_like(input) >= p).to(input.dtype).div_(1 - p)


def dropout_masks(args: argparse.Namespace) -> None:
    from peftbench.run.dropout import bulk_dropout

    hidden = models.load_config(models.resolve(args.model)).hidden_size
    x = torch.randn(args.batch_size, args.max_length, hidden)
    ways = {
        "torch dropout (bernoulli_)": lambda: torch.nn.functional.dropout(x, 0.1, True),
        "uniform draw < p (rand_like)": lambda: rand_dropout(x, 0.1),
        "bulk masks (peftbench)": lambda: bulk_dropout(x, 0.1, True),
    }
    print(
        f"\n5. dropout masks: one mask of {args.batch_size}x{args.max_length}x{hidden} = {x.numel():,} elements, p "
        "0.1, median of 20"
    )
    for name, draw in ways.items():
        draw()  # warm-up
        times = []
        for _ in range(20):
            started = time.perf_counter()
            draw()
            times.append(time.perf_counter() - started)
        print(f"   {name:30} {statistics.median(times) * 1e3:8.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--methods", default="lora,full", help="comma-separated registry names")
    parser.add_argument("--quick", action="store_true", help="one round and fewer steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=86)
    parser.add_argument("--samples", type=int, help="timed examples per bench_train process (default 384, quick 128)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the settings (default 2, quick 1)")
    parser.add_argument("--steps", type=int, help="timed steps taken apart (default 4, quick 2)")
    parser.add_argument(
        "--runs", type=Path, default=ROOT / "results" / "demo-fresh-clone", help="a folder of finished runs"
    )
    parser.add_argument("--only", default="12345", help="which parts to run, e.g. 23")
    args = parser.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    args.samples = args.samples or (128 if args.quick else 384)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.steps = args.steps or (2 if args.quick else 4)
    print(f"CPU: {cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model}")
    if "1" in args.only:
        threads_and_allocators(args)
    if "2" in args.only or "3" in args.only:
        loaded = load(args)
        if "2" in args.only:
            packing(loaded, args)
        if "3" in args.only:
            frozen_work(loaded, args)
    if "4" in args.only:
        evaluation_cost(args.runs)
    if "5" in args.only:
        dropout_masks(args)


if __name__ == "__main__":
    main()

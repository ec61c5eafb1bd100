"""Steady-state training speed: the reference loop as the blog post wrote it vs peftbench's own loop.

    python benchmarks/bench_train.py --model NAME_OR_DIR --method lora [--quick]

Both variants train the same model, method, batch size and examples, in one process, interleaved
(a, b, a, b, ...) so that drift of the machine cancels out; warm-up steps are left out. Printed per
variant: training samples/s, real (non-padding) tokens/s, achieved model FLOP/s as a fraction of a
matrix-product peak measured here, peak memory growth during the timed steps, evaluation samples/s.
The last line is `speedup: X.XX`, (b)/(a) in training samples/s.

(a) reference: fp32, uniformly random batches padded to the longest, torch's default AdamW, the loss read
    back every step, evaluation at the training batch size.
(b) peftbench: peftbench.train's loaders, optimizer, precision and step function, with its defaults.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from peftbench import models  # noqa: E402
from peftbench.config import DataConfig, TrainConfig  # noqa: E402
from peftbench.data import load_labeled_texts, split, tokenize  # noqa: E402
from peftbench.hardware import resolve_precision  # noqa: E402
from peftbench.measure import PeakMemory, count_parameters, synchronize  # noqa: E402
from peftbench.methods import REGISTRY  # noqa: E402
from peftbench.runner import PRECISION_TO_ACCELERATE  # noqa: E402
from peftbench.train import EXAMPLE_INDEX, build_loaders, build_optimizer, store_frozen_weights_in, train_step  # noqa: E402


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


@dataclass
class Variant:
    name: str
    model: Any
    loader: DataLoader
    eval_loader: DataLoader
    step: Any  # callable(batch) -> None
    context: Any  # callable() -> context manager for evaluation forward passes
    precision: str
    rounds: list[dict[str, float]] = field(default_factory=list)


def run_round(variant: Variant, device: torch.device, warmup_steps: int) -> None:
    variant.model.train()
    batches = list(variant.loader)  # collation is cheap; keep it out of the step timing for both alike
    for batch in batches[:warmup_steps]:
        variant.step(batch)
    timed = batches[warmup_steps:]
    meter = PeakMemory(device)
    meter.start()
    synchronize(device)
    started = time.perf_counter()
    for batch in timed:
        variant.step(batch)
    synchronize(device)
    elapsed = time.perf_counter() - started
    samples = sum(len(b["labels"]) for b in timed)
    real_tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    padded_tokens = sum(b["input_ids"].numel() for b in timed)
    variant.model.eval()
    eval_batches = list(variant.eval_loader)
    synchronize(device)
    eval_started = time.perf_counter()
    with torch.inference_mode(), variant.context():
        for batch in eval_batches:
            batch = {k: v for k, v in batch.items() if k not in ("labels", EXAMPLE_INDEX)}
            variant.model(**batch).logits.float().argmax(-1).tolist()
    synchronize(device)
    eval_elapsed = time.perf_counter() - eval_started
    variant.rounds.append(
        {
            "samples_per_s": samples / elapsed,
            "real_tokens_per_s": real_tokens / elapsed,
            "padded_tokens_per_s": padded_tokens / elapsed,
            "peak_memory_mb": meter.peak_mb(),
            "eval_samples_per_s": sum(len(b["input_ids"]) for b in eval_batches) / eval_elapsed,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--method", default="lora", choices=sorted(REGISTRY))
    parser.add_argument("--quick", action="store_true", help="fewer samples and one round: under 2 minutes on a 2-core CPU")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, help="training examples per round (default 640, quick 192)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per variant (default 3, quick 1)")
    parser.add_argument("--max-length", type=int, default=86)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    samples = args.samples or (192 if args.quick else 640)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup_steps = 1 if args.quick else 2

    from accelerate import Accelerator
    from transformers import DataCollatorWithPadding, get_constant_schedule

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = models.resolve(args.model)
    tokenizer = models.load_tokenizer(name)
    models.configure_padding(tokenizer, models.load_config(name).model_type)
    parts = split(load_labeled_texts(DataConfig()), DataConfig(max_train_samples=samples, max_eval_samples=min(samples, 512)))
    train = tokenize(tokenizer, parts.train, args.max_length)
    eval_ = tokenize(tokenizer, parts.eval, args.max_length)
    collator = DataCollatorWithPadding(tokenizer)
    method = REGISTRY[args.method]
    labels = parts.train.label_names

    def fresh_model() -> Any:
        torch.manual_seed(0)
        return method.build(models.load_classifier(name, len(labels), labels, tokenizer.pad_token_id))

    # (a) the reference loop
    reference_model = fresh_model().to(device)
    reference_optimizer = torch.optim.AdamW([p for p in reference_model.parameters() if p.requires_grad], lr=args.lr)
    generator = torch.Generator().manual_seed(0)

    def reference_step(batch: dict[str, Any]) -> None:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = reference_model(**batch).loss
        loss.backward()
        reference_optimizer.step()
        reference_optimizer.zero_grad()
        loss.item()  # the post logged the loss of every step

    reference_eval = [{k: v for k, v in e.items()} for e in eval_]
    from contextlib import nullcontext

    variant_a = Variant(
        "a: reference loop", reference_model,
        DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=collator, generator=generator),
        DataLoader(reference_eval, batch_size=args.batch_size, collate_fn=collator), reference_step, nullcontext, "fp32",
    )  # fmt: skip

    # (b) peftbench's loop, with its defaults
    config = TrainConfig(batch_size=args.batch_size)
    precision = resolve_precision(config.precision, device)
    accelerator = Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[precision])
    fast_model = fresh_model()
    if precision == "bf16" and config.frozen_weights_bf16:
        store_frozen_weights_in(fast_model, torch.bfloat16)
    train_loader, eval_loader = build_loaders(train, eval_, collator, config)
    optimizer = build_optimizer(fast_model, config, args.lr, accelerator.device)
    scheduler = get_constant_schedule(optimizer)
    fast_model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(fast_model, optimizer, train_loader, eval_loader, scheduler)
    variant_b = Variant(
        "b: peftbench loop", fast_model, train_loader, eval_loader,
        lambda batch: train_step(fast_model, batch, optimizer, scheduler, accelerator), accelerator.autocast, precision,
    )  # fmt: skip

    total, trainable = count_parameters(reference_model)
    embedding_params = sum(p.numel() for n, p in reference_model.named_parameters() if "embeddings" in n)
    matmul_params = total - embedding_params
    # Training FLOPs per token: forward 2N; backward 2N for activation gradients, plus 2N for weight
    # gradients only where weights are trained (full fine-tuning). Attention scores are left out.
    flops_per_token = (6 if trainable > total // 2 else 4) * matmul_params
    peak_size = 4096 if device.type == "cuda" else 1536
    peaks = {"fp32": matmul_peak_flops(torch.float32, device, peak_size), "bf16": matmul_peak_flops(torch.bfloat16, device, peak_size)}
    peaks["fp16"] = matmul_peak_flops(torch.float16, device, peak_size) if device.type == "cuda" else peaks["fp32"]

    print(f"model {args.model} ({total:,} parameters, {trainable:,} trainable with {args.method}), device {device.type}")
    print(f"{samples} training examples per round, batch {args.batch_size}, {rounds} round(s) per variant, {warmup_steps} warm-up step(s)")
    print(f"measured matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    for _ in range(rounds):
        for variant in (variant_a, variant_b):
            run_round(variant, device, warmup_steps)

    print(f"{'variant':22} {'samples/s':>10} {'real tok/s':>11} {'%peak':>7} {'peak MB':>8} {'eval samples/s':>15} precision")
    summary = {}
    for variant in (variant_a, variant_b):
        median = {k: statistics.median(r[k] for r in variant.rounds) for k in variant.rounds[0]}
        summary[variant.name] = median
        achieved = median["padded_tokens_per_s"] * flops_per_token
        print(
            f"{variant.name:22} {median['samples_per_s']:10.2f} {median['real_tokens_per_s']:11.0f} "
            f"{100 * achieved / peaks[variant.precision]:6.1f}% {median['peak_memory_mb']:8.0f} "
            f"{median['eval_samples_per_s']:15.1f} {variant.precision}"
        )
    a, b = summary[variant_a.name], summary[variant_b.name]
    print(f"ratio b/a: samples/s {b['samples_per_s'] / a['samples_per_s']:.2f}, eval samples/s {b['eval_samples_per_s'] / a['eval_samples_per_s']:.2f}, peak memory {b['peak_memory_mb'] / max(a['peak_memory_mb'], 1e-9):.2f}")
    print(f"speedup: {b['samples_per_s'] / a['samples_per_s']:.2f}")


if __name__ == "__main__":
    main()

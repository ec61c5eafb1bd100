"""Where a training step of peftbench's loop spends its time, by operator (torch.profiler, CPU):

    python benchmarks/profile_step.py --model e5-small-offline --method lora [--precision fp32] [--steps 4]
        [--dropout-masks auto|torch|bulk] [--split-by-length auto|on|off]

The step is peftbench.run.loop's (its loaders, optimizer, precision, dropout masks, split by length and step
function, as bench_train's variant (b)); two warm-up steps, then --steps profiled. Prints the machine, the
resolved settings and the operators by self CPU time, then where the step stands against its physical limit:
the matrix products' FLOPs (torch.profiler's count, from their shapes) and the rate they ran at as a share of a
matmul peak measured in the same process (bench_train's), and how long the step would take with its matrix
products at that peak and everything else as measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

import torch  # noqa: E402
from bench_scale import machine  # noqa: E402
from bench_train import matmul_peak_flops  # noqa: E402

from peftbench.config.sections import DataConfig, TrainConfig  # noqa: E402
from peftbench.data import load_labeled_texts, split, tokenize  # noqa: E402
from peftbench.hardware import resolve_dropout_masks, resolve_precision, resolve_split_by_length  # noqa: E402
from peftbench.methods import REGISTRY  # noqa: E402
from peftbench.models import classifier as models  # noqa: E402
from peftbench.run.dropout import bulk_masks  # noqa: E402
from peftbench.run.loop import build_loaders, build_optimizer, store_frozen_weights_in, train_step  # noqa: E402
from peftbench.run.worker import PRECISION_TO_ACCELERATE  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--method", default="lora", choices=sorted(REGISTRY))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--dropout-masks", default="auto", choices=["auto", "torch", "bulk"])
    parser.add_argument("--split-by-length", default="auto", choices=["auto", "on", "off"])
    args = parser.parse_args()
    from accelerate import Accelerator
    from transformers import get_constant_schedule

    device = torch.device("cpu")
    name = models.resolve(args.model)
    tokenizer = models.load_tokenizer(name)
    config_hf = models.load_config(name)
    models.configure_padding(tokenizer, config_hf)
    parts = split(load_labeled_texts(DataConfig()), DataConfig())
    train = tokenize(tokenizer, parts.train, 86)
    config = TrainConfig(batch_size=args.batch_size, precision=args.precision)
    precision = resolve_precision(config.precision, device)
    accelerator = Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[precision], cpu=True)
    labels = parts.train.label_names
    torch.manual_seed(0)
    model = REGISTRY[args.method].build(
        models.load_classifier(name, len(labels), labels, tokenizer.pad_token_id, "eager")
    )
    if precision == "bf16" and config.frozen_weights_bf16:
        store_frozen_weights_in(model, torch.bfloat16)
    loader, _ = build_loaders(train, train[:8], models.Collator(tokenizer, models.is_decoder(config_hf)), config)
    optimizer = build_optimizer(model, config, 3e-4, device)
    scheduler = get_constant_schedule(optimizer)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()
    batches = iter(loader)
    for _ in range(2):
        train_step(model, next(batches), optimizer, scheduler, accelerator)
    profiled = [next(batches) for _ in range(args.steps)]
    dropout_masks = resolve_dropout_masks(args.dropout_masks, device, precision)
    split_steps = resolve_split_by_length(args.split_by_length, device) == "on"
    activities = [torch.profiler.ProfilerActivity.CPU]
    with bulk_masks(dropout_masks == "bulk"), torch.profiler.profile(activities=activities, with_flops=True) as profile:
        for batch in profiled:
            train_step(model, batch, optimizer, scheduler, accelerator, split=split_steps)
    print(
        f"{machine()}; precision {precision}; {args.method}, batch {args.batch_size}, dropout masks {dropout_masks}, "
        f"split by length {'on' if split_steps else 'off'}, {args.steps} steps profiled"
    )
    averages = profile.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    # the best of several short products: one alone reads 25% low or more on a shared 2-core machine
    peak = max(
        matmul_peak_flops(torch.bfloat16 if precision == "bf16" else torch.float32, device, 1536, 10) for _ in range(6)
    )
    print(against_peak(averages, peak, args.steps))
    return 0


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def against_peak(averages: list, peak: float, steps: int) -> str:
    """The matrix products' share of the profiled time, the rate they ran at against the measured peak, and the
    step's time with them at that peak (the rest as measured): how far from its limit each part is."""
    total_us = sum(event.self_cpu_time_total for event in averages)
    matmul = [event for event in averages if event.key in MATMULS]
    matmul_us = sum(event.self_cpu_time_total for event in matmul)
    flops = sum(event.flops for event in matmul)
    at_peak_us = flops / peak * 1e6
    rest_us = total_us - matmul_us
    return "\n".join(
        [
            f"measured matmul peak (best of 6 rounds of 10 products 1536x1536): {peak / 1e9:.0f} GFLOP/s",
            f"per step: {total_us / steps / 1e6:.3f} s profiled; matrix products {matmul_us / steps / 1e6:.3f} s "
            f"({100 * matmul_us / total_us:.1f}%), {flops / steps / 1e9:.1f} GFLOP at "
            f"{flops / matmul_us / 1e3:.0f} GFLOP/s = {100 * flops / matmul_us * 1e6 / peak:.1f}% of the peak; "
            f"everything else {rest_us / steps / 1e6:.3f} s",
            f"with the matrix products at the peak: {(at_peak_us + rest_us) / steps / 1e6:.3f} s per step "
            f"(the step {total_us / (at_peak_us + rest_us):.2f}x faster); with everything else free too: "
            f"{at_peak_us / steps / 1e6:.3f} s ({total_us / at_peak_us:.2f}x)",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())

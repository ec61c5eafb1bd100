"""Where a training step of peftbench's loop spends its time, by operator (torch.profiler, CPU):

    python benchmarks/profile_step.py --model e5-small-offline --method lora [--precision fp32] [--steps 4]
        [--dropout-masks bulk]

The step is peftbench.run.loop's (its loaders, optimizer, precision and step function, as bench_train's
variant (b)); two warm-up steps, then --steps profiled. Prints the machine, the resolved precision and the
operators by self CPU time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

import torch  # noqa: E402
from bench_scale import machine  # noqa: E402

from peftbench.config.sections import DataConfig, TrainConfig  # noqa: E402
from peftbench.data import load_labeled_texts, split, tokenize  # noqa: E402
from peftbench.hardware import resolve_precision  # noqa: E402
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
    parser.add_argument("--dropout-masks", default="torch", choices=["torch", "bulk"])
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
    masks = bulk_masks(args.dropout_masks == "bulk")
    with masks, torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for batch in profiled:
            train_step(model, batch, optimizer, scheduler, accelerator)
    print(
        f"{machine()}; precision {precision}; {args.method}, batch {args.batch_size}, "
        f"dropout masks {args.dropout_masks}, {args.steps} steps profiled"
    )
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

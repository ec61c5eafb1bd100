"""What the evaluation batch size costs: peftbench's evaluation (run.loop.evaluate) at several batch sizes.

    python benchmarks/bench_eval.py --model e5-small-offline [--methods lora,full] [--batch-sizes 32,64,128,256]
        [--precision auto|fp32] [--examples 768] [--rounds 3]

For each method, one model (the method applied to the checkpoint, frozen weights stored as the fast
execution stores them), prepared by accelerate as a run prepares it; then the dev split's first --examples,
evaluated by the loop's own `evaluate` (sorted by length, inference mode, autocast where the precision asks)
at each batch size in turn, interleaved over --rounds so that drift of the machine falls on all alike. Prints
the machine, what `auto` resolved to, and per method and batch size the median evaluation samples/s and its
ratio to the fast execution's default on this device at a training batch of 64 (256 until the measurement
in benchmarks/results/bench_eval-bf16.txt made it 64 on CPUs).
Predictions do not depend on the batch size beyond rounding (each example is padded, masked, on its own row).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

import torch  # noqa: E402
from bench_scale import machine  # noqa: E402

from peftbench.config.sections import DataConfig, TrainConfig  # noqa: E402
from peftbench.data import load_labeled_texts, split, tokenize  # noqa: E402
from peftbench.hardware import resolve_attention, resolve_precision  # noqa: E402
from peftbench.methods import REGISTRY  # noqa: E402
from peftbench.models import classifier as models  # noqa: E402
from peftbench.run.loop import build_eval_loader, evaluate, store_frozen_weights_in  # noqa: E402
from peftbench.run.worker import PRECISION_TO_ACCELERATE  # noqa: E402

DEFAULT_EVAL_BATCH = TrainConfig(batch_size=64).eval_batch()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--batch-sizes", default="32,64,128,256")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--examples", type=int, default=768)
    parser.add_argument("--max-length", type=int, default=86)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from accelerate import Accelerator

    device = torch.device("cpu")
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    name = models.resolve(args.model)
    tokenizer = models.load_tokenizer(name)
    config_hf = models.load_config(name)
    models.configure_padding(tokenizer, config_hf)
    parts = split(load_labeled_texts(DataConfig()), DataConfig(max_eval_samples=args.examples))
    examples = tokenize(tokenizer, parts.eval, args.max_length)
    collator = models.Collator(tokenizer, models.is_decoder(config_hf))
    precision = resolve_precision(args.precision, device)
    attention = resolve_attention("auto", device)
    print(f"{machine()}; precision {args.precision} -> {precision}; attention {attention}")
    print(f"{len(examples)} dev examples, max_length {args.max_length}, {args.rounds} interleaved rounds, medians")
    for method_name in args.methods.split(","):
        accelerator = Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[precision], cpu=True)
        labels = parts.train.label_names
        torch.manual_seed(0)
        model = REGISTRY[method_name].build(
            models.load_classifier(name, len(labels), labels, tokenizer.pad_token_id, attention)
        )
        if precision == "bf16" and TrainConfig().frozen_weights_bf16:
            store_frozen_weights_in(model, torch.bfloat16)
        model = accelerator.prepare(model)
        loaders = {s: build_eval_loader(examples, collator, TrainConfig(eval_batch_size=s)) for s in sizes}
        rates: dict[int, list[float]] = {s: [] for s in sizes}
        evaluate(model, loaders[sizes[0]], accelerator, False, "warm-up", 64)
        for _ in range(args.rounds):
            for size in sizes:
                started = time.perf_counter()
                evaluate(model, loaders[size], accelerator, False, "timed", 64)
                rates[size].append(len(examples) / (time.perf_counter() - started))
        base = statistics.median(rates[DEFAULT_EVAL_BATCH]) if DEFAULT_EVAL_BATCH in rates else float("nan")
        for size in sizes:
            rate = statistics.median(rates[size])
            print(
                f"{method_name:8} eval batch {size:4}: {rate:8.1f} samples/s  "
                f"(rounds {' '.join(f'{r:.1f}' for r in rates[size])})  x default {rate / base:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

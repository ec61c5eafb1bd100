"""Which method runs on which decoder family: every method of the registry, two optimiser steps each at bf16
(the precision whose frozen weights are cast, norm layers kept fp32), on tiny random decoders of seven families
built from configs (tests/tiny_model.py), through the worker a grid uses, under each execution (fast, and the
reference's, which asks for SDPA attention: a family that refuses it falls back to eager). Prints a Markdown
table per execution (docs/running.md's) and the reason of each failure. With --models, the columns are real
models instead (named offline decoders such as smollm2-135m-offline, or model folders), on the same 8 reviews.

    python benchmarks/decoder_matrix.py [--families llama,gpt2] [--executions fast,reference]
    python benchmarks/decoder_matrix.py --models smollm2-135m-offline,gemma3-270m-offline

The same check runs in the test suite (tests/test_decoders.py), which asserts that the reference's five
methods run on every family and that every failure names its limitation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from bench_scale import machine  # noqa: E402
from decoders import as_table, family_matrix, folder_matrix  # noqa: E402
from tiny_model import DECODER_CONFIGS  # noqa: E402

from peftbench.methods import REGISTRY  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--families", default=",".join(DECODER_CONFIGS), help="comma-separated, of: " + ", ".join(DECODER_CONFIGS)
    )
    parser.add_argument("--executions", default="fast,reference", help="comma-separated, of: fast, reference")
    parser.add_argument("--models", default="", help="comma-separated real models (named or folders), not families")
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    models = [m for m in args.models.split(",") if m]
    import peft
    import torch
    import transformers

    from peftbench.hardware import resolve_precision

    print(f"{machine()}; auto precision: {resolve_precision('auto', torch.device('cpu'))}")
    print(f"transformers {transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}")
    from peftbench.models.classifier import resolve

    folders = {model: Path(resolve(model)) for model in models}  # named ones converted once, here
    for execution in [e for e in args.executions.split(",") if e]:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            if models:
                matrix = {m: folder_matrix(folders[m], folder / m, list(REGISTRY), execution, True) for m in models}
            else:
                matrix = {f: family_matrix(f, folder / f, list(REGISTRY), execution) for f in families}
        print(f"\nexecution: {execution}\n")
        print(as_table(matrix))
    return 0


if __name__ == "__main__":
    sys.exit(main())

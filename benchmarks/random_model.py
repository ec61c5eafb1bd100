"""Write a random BERT to a folder, for benchmarks on machines without the hub:

    python benchmarks/random_model.py --size reference OUT   # hfl/chinese-roberta-wwm-ext's exact architecture
    python benchmarks/random_model.py --size tiny OUT        # the tests' 2-layer model

Its tokenizer is the tests' character vocabulary from the bundled reviews; the reference size keeps the
reference's 21,128-entry embedding table, so parameter counts, memory and speed are the real model's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from tiny_model import BERT_BASE, write_tiny_bert  # noqa: E402

SIZES = {
    "tiny": {},
    "reference": {**BERT_BASE, "vocab_size": 21128, "max_position_embeddings": 512},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="reference")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    write_tiny_bert(args.out, **SIZES[args.size])
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

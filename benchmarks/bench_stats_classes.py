"""Macro-F1 over bootstrap resamples with many classes: peftbench's counting (one bincount per block of
resamples) against a pass over the examples per class, the way it was computed before. Prints both times and
their ratio, and checks that the two agree.

    python benchmarks/bench_stats_classes.py --classes 2000 --examples 2000 --resamples 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from peftbench.analysis.stats import macro_f1
from peftbench.hardware import device_description


def per_class(references: np.ndarray, predictions: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The earlier computation: one pass over every resample per class."""
    scores = []
    for label in classes:
        predicted, actual = predictions == label, references == label
        true_pos = np.sum(predicted & actual, axis=-1)
        denominator = np.sum(predicted, axis=-1) + np.sum(actual, axis=-1)
        scores.append(np.divide(2 * true_pos, denominator, out=np.zeros(np.shape(true_pos)), where=denominator > 0))
    return np.mean(scores, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=2000)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    truth = rng.integers(0, args.classes, args.examples)
    guess = np.where(rng.random(args.examples) < 0.7, truth, rng.integers(0, args.classes, args.examples))
    picks = rng.integers(0, args.examples, (args.resamples, args.examples))
    references, predictions = truth[picks], guess[picks]
    classes = np.union1d(truth, guess)
    timings = {}
    for name, compute in (("bincount", macro_f1), ("per-class", per_class)):
        start = time.perf_counter()
        scores = compute(references, predictions, classes)
        timings[name] = (time.perf_counter() - start, scores)
    assert np.allclose(timings["bincount"][1], timings["per-class"][1], atol=1e-12)
    print(
        f"cpu: {device_description(torch.device('cpu'))['name']}; {len(classes)} classes, {args.examples} examples, "
        f"{args.resamples} resamples"
    )
    for name, (seconds, _) in timings.items():
        print(f"{name}: {seconds:.2f} s")
    print(f"speedup: {timings['per-class'][0] / timings['bincount'][0]:.1f}")


if __name__ == "__main__":
    main()

"""A search folder's methods ranked on dev, to pick which go on to a comparison without reading test.

python scripts/rank_on_dev.py SEARCH_DIR [--exclude full,lora,...] [--top 5]

Each method's run at its chosen rate and evaluation (a `--select-only` search: one run a method, test never
read) is ranked by dev accuracy, ties broken by the lower dev loss; a method whose run failed or diverged is out. Prints
the ranking as a Markdown table and, last, the `--top` methods as one comma-separated line for `--methods`.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from peftbench.methods.registry import SEED_METHODS
from peftbench.records import Status, dev_order
from peftbench.store.runs import ResultStore
from peftbench.store.schema import RunRecord

TRAINED = (Status.OK, Status.COLLAPSED)  # a diverged or failed run has no chosen rate to rank


def _on_dev(record: RunRecord) -> tuple[float, float]:
    """The run's chosen evaluation on dev, ordered by the rule that chose it (records.better_on_dev)."""
    result = record.result
    loss = result.dev_loss if result.dev_loss is not None else float("inf")
    return dev_order({"accuracy": result.dev_accuracy or 0.0, "eval_loss": loss})


def ranking(folder: Path, exclude: set[str]) -> list[RunRecord]:
    records = ResultStore(folder, read_only=True).records(include_failed=False)
    kept = [r for r in records if r.method not in exclude and r.result.status in TRAINED]
    if not kept:
        raise ValueError(f"{folder}: no trained run to rank in {folder / 'runs'}")
    seeds = [method for method, runs in Counter(r.method for r in kept).items() if runs > 1]
    if seeds:
        raise ValueError(f"{folder}: more than one run of {', '.join(sorted(seeds))}: rank a one-seed search")
    return sorted(kept, key=_on_dev, reverse=True)


def _row(rank: int, record: RunRecord) -> str:
    result = record.result
    loss = "–" if result.dev_loss is None else f"{result.dev_loss:.4f}"
    return (
        f"| {rank} | {record.method} | {result.dev_accuracy:.4f} | {loss} | {result.chosen_lr:g} | "
        f"{result.chosen_step} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a peftbench results folder (its runs/ are read, never written)")
    parser.add_argument(
        "--exclude", default=",".join(SEED_METHODS), help="methods left out (default: the reference's five)"
    )
    parser.add_argument("--top", type=int, default=5, help="how many to pick (default 5)")
    args = parser.parse_args()
    try:
        ranked = ranking(args.folder, set(filter(None, args.exclude.split(","))))
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")  # one line and exit 2, as peftbench's own commands
    print("| rank | method | dev accuracy | dev loss | lr chosen | step chosen |")
    print("|---|---|---|---|---|---|")
    for rank, record in enumerate(ranked, start=1):
        print(_row(rank, record))
    print("\n" + ",".join(r.method for r in ranked[: args.top]))


if __name__ == "__main__":
    main()

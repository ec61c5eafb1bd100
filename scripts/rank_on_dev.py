"""A search folder's methods ranked on dev, to pick which go on to a comparison without reading test.

python scripts/rank_on_dev.py SEARCH_DIR [--exclude full,lora,...] [--top 5]

Each method's run at its chosen rate and evaluation (a `--select-only` search: one run a method, test never
read) is ranked by dev accuracy, ties broken by the lower dev loss; a method whose run failed or diverged is out. Prints
the ranking as a Markdown table and, last, the `--top` methods as one comma-separated line for `--methods`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from peftbench.records import Status
from peftbench.store.runs import ResultStore
from peftbench.store.schema import RunRecord

TRAINED = (Status.OK, Status.COLLAPSED)  # a diverged or failed run has no chosen rate to rank
# The reference post's five methods: by default the ones a ranking picks others beside.
REFERENCE_FIVE = "full,lora,prompt-tuning,prefix-tuning,p-tuning"


def _key(record: RunRecord) -> tuple[float, float]:
    result = record.result
    loss = result.dev_loss if result.dev_loss is not None else float("inf")
    return (-(result.dev_accuracy or 0.0), loss)


def ranking(folder: Path, exclude: set[str]) -> list[RunRecord]:
    records = ResultStore(folder, read_only=True).records(include_failed=False)
    kept = [r for r in records if r.method not in exclude and r.result.status in TRAINED]
    if not kept:
        raise ValueError(f"{folder}: no trained run to rank in {folder / 'runs'}")
    seeds = {r.method for r in kept if sum(o.method == r.method for o in kept) > 1}
    if seeds:
        raise ValueError(f"{folder}: more than one run of {', '.join(sorted(seeds))}: rank a one-seed search")
    return sorted(kept, key=_key)


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
    parser.add_argument("--exclude", default=REFERENCE_FIVE, help="methods left out (default: the reference's five)")
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

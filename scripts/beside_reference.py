"""The reference post's accuracies beside a results folder's figures, as a Markdown table for README and notes.

python scripts/beside_reference.py RESULTS_DIR

For each of the reference's five methods (then any other method of the folder): the post's accuracy (one run,
`../shared/SPEC.md`), peftbench's mean ± std over seeds, its 95% interval over the test examples and the
learning rate chosen on dev, all computed from the run files as `peftbench report` computes them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from peftbench.analysis.stats import MethodSummary, analyse
from peftbench.reporting.markdown import display_name, summary_over_seeds
from peftbench.store.runs import ResultStore

# The reference post's test accuracies, as published (hfl/chinese-roberta-wwm-ext, lr 3e-4 for every method,
# 3 epochs of 6,212 ChnSentiCorp reviews): full fine-tuning and prompt tuning are its majority class.
REFERENCE = {"full": 0.6941, "prefix-tuning": 0.7617, "prompt-tuning": 0.7044, "p-tuning": 0.8461, "lora": 0.8976}


def _row(summary: MethodSummary, rates: str) -> str:
    std = "–" if summary.accuracy_std is None else f"{summary.accuracy_std:.4f}"
    low, high = summary.accuracy_ci
    reference = REFERENCE.get(summary.name)
    reference_text = "–" if reference is None else f"{reference:.4f}"
    return (
        f"| {summary.name} | {reference_text} | {summary.accuracy_mean:.4f} ± {std} | [{low:.4f}, {high:.4f}] | "
        f"{summary.seeds} | {rates} |"
    )


def table(folder: Path) -> list[str]:
    records = ResultStore(folder, read_only=True).records(include_failed=False)
    analysis = analyse(records, display_name)
    if analysis is None:
        raise ValueError(f"{folder}: no finished runs with predictions")
    rates = summary_over_seeds(records)["chosen_lrs"]  # the report's "lr" column, per method
    ordered = sorted(analysis.methods, key=lambda m: (m.name not in REFERENCE, -m.accuracy_mean))
    lines = [
        "| method | reference post | peftbench accuracy mean ± std | 95% interval | seeds | lr (chosen on dev) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_row(m, rates[m.name]) for m in ordered]
    lines.append(f"\nMajority class of the test split: {analysis.majority_accuracy:.4f}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a peftbench results folder (its runs/ are read, never written)")
    try:
        lines = table(parser.parse_args().folder)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")  # one line and exit 2, as peftbench's own commands
    print("\n".join(lines))


if __name__ == "__main__":
    main()

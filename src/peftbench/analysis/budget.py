"""What the training budget lets a report conclude, computed from the runs.

A method that stayed at one class with 32 optimiser steps has been judged by its budget, not by what it can
learn; a rate chosen at the end of its grid may be beaten by one beyond it; a run whose dev accuracy still
rose at its last evaluation stopped before it was done. Each is a fact about how the comparison was run,
and the recommendation states it beside the verdicts it qualifies (analysis.recommend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peftbench.config.sections import steps_per_epoch
from peftbench.records import COLLAPSE_SHARE, Status
from peftbench.store.schema import Epoch, RunRecord


@dataclass(frozen=True, order=True)
class Budget:
    """What one run trained on at one rate: its training examples, epochs and batch."""

    train_examples: int
    epochs: int
    batch_size: int

    @property
    def steps(self) -> int:
        return steps_per_epoch(self.train_examples, self.batch_size) * self.epochs

    @property
    def examples_seen(self) -> int:
        return self.train_examples * self.epochs

    def describe(self) -> str:
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return (
            f"{self.steps:,} optimiser steps a run, {self.examples_seen:,} examples seen "
            f"({self.train_examples:,} training examples × {epochs}, batch {self.batch_size})"
        )


def budget_of(record: RunRecord) -> Budget | None:
    examples = record.data.train_examples
    if examples is None:
        return None
    train = record.config.train
    return Budget(examples, int(train["epochs"]), int(train["batch_size"]))


@dataclass
class MethodDiagnosis:
    """One method over its runs: the rates it tried and chose, and what its evaluations say of the budget."""

    name: str
    runs: int
    rates: list[float] = field(default_factory=list)  # every rate tried by any of its runs, ascending
    at_lowest: int = 0  # runs that chose the lowest rate of a grid of two or more
    at_highest: int = 0
    rising: int = 0  # runs whose dev accuracy rose at their last evaluation (of the chosen rate)
    told: int = 0  # runs with two evaluations or more of the chosen rate, so that rising can be told
    never_learnt: bool = False  # one class at every evaluation of every rate, in every run

    def grid(self) -> str:
        return f"{self.rates[0]:g}–{self.rates[-1]:g}"


def _evaluations(record: RunRecord) -> list[list[Epoch]]:
    """Every rate's evaluations; a run without a trial list has its chosen rate's only."""
    trials = record.result.trials_tried()
    return [t.epochs for t in trials] if trials else [record.result.epochs or []]


def _learnt_nothing(record: RunRecord) -> bool | None:
    """Whether every evaluation of every rate predicted one class; None where a run stored no class shares."""
    evaluations = [e for epochs in _evaluations(record) for e in epochs]
    if record.status == Status.DIVERGED and not evaluations:
        return True
    shares = [e.top_predicted_class_share for e in evaluations]
    if not shares or any(share is None for share in shares):
        return None
    return all(share is not None and share >= COLLAPSE_SHARE for share in shares)


def diagnose_method(name: str, records: list[RunRecord]) -> MethodDiagnosis:
    found = MethodDiagnosis(name, len(records))
    tried = {t.lr for r in records for t in r.result.trials_tried()}
    # a run without a trial list tried one rate: the one it was given
    found.rates = sorted(tried or {lr for r in records for lr in (r.result.chosen_lr or r.config.lr,) if lr})
    for record in records:
        chosen = record.result.chosen_lr
        if len(found.rates) > 1 and chosen is not None:
            found.at_lowest += math.isclose(chosen, found.rates[0])
            found.at_highest += math.isclose(chosen, found.rates[-1])
        epochs = record.result.epochs or []
        if len(epochs) > 1:
            found.told += 1
            found.rising += epochs[-1].accuracy > epochs[-2].accuracy
    learnt_nothing = [_learnt_nothing(r) for r in records]
    found.never_learnt = bool(records) and all(learnt_nothing)
    return found


@dataclass
class Diagnosis:
    """The budget of a set of runs and what it says of each method (best method first, as the analysis has them)."""

    budgets: list[Budget]
    methods: list[MethodDiagnosis]

    def never_learnt(self) -> list[str]:
        return [m.name for m in self.methods if m.never_learnt]

    def budget_line(self) -> str | None:
        if not self.budgets:
            return None
        if len(self.budgets) == 1:
            return f"Budget: {self.budgets[0].describe()}."
        shown = "; ".join(b.describe() for b in self.budgets)
        return f"Budgets differ between these runs ({shown}): accuracy compares only within one budget."

    def never_learnt_line(self) -> str | None:
        methods = [m for m in self.methods if m.never_learnt]
        if not methods:
            return None
        steps = "/".join(f"{b.steps:,}" for b in self.budgets) or "the"
        shown = ", ".join(f"{m.name} ({_rates(m)})" for m in methods)
        return (
            f"Did not learn within {steps} steps at any rate tried (one class at every evaluation on dev): {shown}. "
            "No verdict on these methods: the budget decided, not the method."
        )

    def grid_line(self) -> str | None:
        edges = []
        for m in self.methods:
            if m.never_learnt:
                continue
            for count, end in ((m.at_lowest, "lowest"), (m.at_highest, "highest")):
                if count:
                    edges.append(f"{m.name} chose the {end} rate of {m.grid()} in {count} of {m.runs} runs")
        if not edges:
            return None
        return f"The best rate may lie outside the grid tried: {'; '.join(edges)}. Widen it."

    def rising_lines(self) -> list[str]:
        rising = [m for m in self.methods if m.rising and not m.never_learnt]
        lines = []
        if rising:
            shown = ", ".join(f"{m.name} ({m.rising} of {m.told} runs)" for m in rising)
            lines.append(
                f"Still learning when training stopped (dev accuracy rose at the last evaluation): {shown}. "
                "A longer budget may change the answer."
            )
        if self.methods and not any(m.told for m in self.methods):
            lines.append(
                "Each run was evaluated once on dev, so whether it was still learning cannot be told "
                "(--epochs 2 or more, or --eval-every N steps, evaluates more often)."
            )
        return lines

    def lines(self) -> list[str]:
        """The diagnostics that follow the verdicts, one sentence per line (the budget line goes first)."""
        found = [self.never_learnt_line(), self.grid_line(), *self.rising_lines()]
        return [line for line in found if line]


def _rates(method: MethodDiagnosis) -> str:
    if not method.rates:
        return "one rate"
    if len(method.rates) == 1:
        return f"rate {method.rates[0]:g}"
    return "rates " + ", ".join(f"{r:g}" for r in method.rates)


def diagnose(by_method: dict[str, list[RunRecord]]) -> Diagnosis:
    budgets = sorted({b for runs in by_method.values() for b in map(budget_of, runs) if b is not None})
    return Diagnosis(budgets, [diagnose_method(name, runs) for name, runs in by_method.items()])

"""The answer to the user's question, computed from the runs: which method, and which is cheapest among the
ones that are as good. Never written by hand: every figure and every verdict comes from stats.Analysis."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from peftbench.analysis.classes import classes_text
from peftbench.analysis.stats import ALPHA, Analysis, MethodSummary


@dataclass
class Constraints:
    """Limits a user's deployment puts on a method (`peftbench report DIR --max-trainable-params N`)."""

    max_trainable_params: float | None = None
    max_memory_mb: float | None = None

    def allows(self, method: MethodSummary) -> bool:
        checks = ((self.max_trainable_params, method.trainable_params), (self.max_memory_mb, method.peak_memory_mb))
        return all(limit is None or (value is not None and value <= limit) for limit, value in checks)

    def describe(self) -> str:
        parts = []
        if self.max_trainable_params is not None:
            parts.append(f"at most {self.max_trainable_params:,.0f} trainable parameters")
        if self.max_memory_mb is not None:
            parts.append(f"peak memory at most {self.max_memory_mb:,.0f} MB")
        return " and ".join(parts)


@dataclass
class Recommendation:
    best: MethodSummary | None
    tied: list[MethodSummary] = field(default_factory=list)  # not significantly worse than the best
    cheapest: dict[str, MethodSummary] = field(default_factory=dict)  # criterion -> method, among best and tied
    not_better_than_majority: list[MethodSummary] = field(default_factory=list)
    # never left one class on dev at any rate tried: a verdict on the budget, not on the method (analysis.budget)
    no_verdict: list[MethodSummary] = field(default_factory=list)
    excluded: list[MethodSummary] = field(default_factory=list)  # outside the constraints
    constraints: Constraints = field(default_factory=Constraints)
    compared: int = 0  # other methods the best was tested against (those allowed that beat the majority class)

    @property
    def within(self) -> str:
        """The words " within the constraint" where the user gave one: the verdicts hold among the methods allowed."""
        return " within the constraint" if self.constraints.describe() else ""


# what the cheapest of the best and its ties is named by -> the MethodSummary field it is judged on (lower wins)
CRITERIA = {
    "fewest trainable parameters": "trainable_params",
    "smallest adapter": "adapter_size_mb",
    "lowest peak memory": "peak_memory_mb",
    "fastest training": "train_time_min",
    "cheapest at inference": "inference_ms_per_example",
}


def recommend(analysis: Analysis, constraints: Constraints | None = None) -> Recommendation:
    constraints = constraints or Constraints()
    allowed = [m for m in analysis.methods if constraints.allows(m)]  # analysis.methods: best first
    excluded = [m for m in analysis.methods if not constraints.allows(m)]
    never_learnt = analysis.diagnosis.never_learnt() if analysis.diagnosis else []
    no_verdict = [m for m in analysis.methods if m.name in never_learnt]
    not_better = [m for m in analysis.methods if m.runs_not_better_than_majority and m.name not in never_learnt]
    # A method that never beat the majority class is no recommendation, however the others did.
    candidates = [m for m in allowed if m.runs_not_better_than_majority < m.seeds and m.name not in never_learnt]
    if not candidates:
        return Recommendation(
            None, not_better_than_majority=not_better, no_verdict=no_verdict, excluded=excluded, constraints=constraints
        )
    best = candidates[0]
    tied = []
    for other in candidates[1:]:
        comparison = analysis.comparison(best.name, other.name)
        if comparison is not None and not comparison.significant:
            tied.append(other)
    cheapest = {}
    for criterion, key in CRITERIA.items():
        measured = [m for m in [best, *tied] if getattr(m, key) is not None]
        if measured:
            cheapest[criterion] = min(measured, key=lambda m: getattr(m, key))
    return Recommendation(best, tied, cheapest, not_better, no_verdict, excluded, constraints, len(candidates) - 1)


def _missing(method: MethodSummary, who: str) -> str:
    """A sentence for a method whose runs never predicted some class of the split; "" where none did."""
    if not method.runs_missing_classes:
        return ""
    runs = f"{method.runs_missing_classes} of {method.seeds} runs"
    classes = classes_text(method.missing_classes)
    return f" {who} never predicted {classes} ({runs}): zero recall there, whatever the accuracy."


def _alone(recommendation: Recommendation, analysis: Analysis) -> str:
    """Where the best was tested against nothing: say why, rather than call the others significantly worse."""
    if len(analysis.methods) == 1:
        return "It is the only method run, so it was compared with none."
    return f"It is the only method{recommendation.within} that beat the majority class, so it was compared with none."


def _interval(low_high: tuple[float, float]) -> str:
    return f"[{low_high[0]:.3f}, {low_high[1]:.3f}]"


def significant(value: float | None, digits: int = 3) -> str:
    """`value` to `digits` significant digits, never with an exponent: a full fine-tuning's share is "100"
    and its adapter "1020" MB, where format's "g" writes "1e+02" and "1.02e+03"; "?" where unmeasured."""
    if value is None:
        return "?"
    return np.format_float_positional(value, precision=digits, fractional=False, trim="-")


def _cost(criterion: str, method: MethodSummary) -> str:
    if criterion == "fewest trainable parameters":
        return f"{method.trainable_params:,.0f}, {significant(method.trainable_pct, 2)}% of the model"
    if criterion == "smallest adapter":
        return f"{significant(method.adapter_size_mb)} MB"
    if criterion == "lowest peak memory":
        return f"{method.peak_memory_mb:,.0f} MB"
    if criterion == "cheapest at inference":
        return f"{significant(method.inference_ms_per_example)} ms an example at batch 1"
    return f"{method.train_time_min:.2f} min a run"


def sentences(recommendation: Recommendation, analysis: Analysis) -> list[str]:
    """The recommendation in plain words, one sentence per line (report.md and report.html both show them)."""
    diagnosis = analysis.diagnosis
    budget = diagnosis.budget_line() if diagnosis else None
    lines = [budget] if budget else []
    if recommendation.constraints.describe():
        left = ", ".join(m.name for m in recommendation.excluded) or "none"
        lines.append(f"Constraint: {recommendation.constraints.describe()}; left out: {left}.")
    best = recommendation.best
    if best is None:
        learnt = (
            "No method learnt within the budget"
            if recommendation.no_verdict and not recommendation.not_better_than_majority
            else "No method beat the majority class"
        )
        lines.append(f"{learnt}{recommendation.within}.")
    else:
        seeds = f"mean of {best.seeds} seeds" if best.seeds > 1 else "one seed"
        lines.append(
            f"Best: {best.name}, accuracy {best.accuracy_mean:.3f} {_interval(best.accuracy_ci)} ({seeds}; 95% "
            "interval over "
            f"the {analysis.split} examples), macro-F1 {best.f1_macro_mean:.3f}." + _missing(best, "Its runs")
        )
        if recommendation.tied:
            shown = ", ".join(f"{m.name} {m.accuracy_mean:.3f}" for m in recommendation.tied)
            lines.append(
                f"Tied with it (not significantly worse: paired permutation test, Holm-corrected, α = {ALPHA}): "
                f"{shown}."
            )
        elif recommendation.compared:
            lines.append(
                "No other method is tied with it: each is significantly worse (paired permutation test, "
                f"Holm-corrected, α = {ALPHA})."
            )
        else:
            lines.append(_alone(recommendation, analysis))
        missing = [m for m in recommendation.tied if m.runs_missing_classes]
        if missing:
            lines.append(" ".join(_missing(m, m.name).strip() for m in missing))
        if recommendation.tied:
            costs = "; ".join(
                f"{criterion}: {m.name} ({_cost(criterion, m)})" for criterion, m in recommendation.cheapest.items()
            )
            lines.append(f"Among these, {costs}.")
        else:
            costs = "; ".join(
                f"{criterion.split()[-1]} {_cost(criterion, m)}" for criterion, m in recommendation.cheapest.items()
            )
            lines.append(f"Its cost: {costs}.")
    if recommendation.not_better_than_majority:
        shown = ", ".join(
            f"{m.name} ({m.runs_not_better_than_majority} of {m.seeds} seeds)"
            for m in recommendation.not_better_than_majority
        )
        lines.append(f"Not better than the majority class ({analysis.majority_accuracy:.3f}): {shown}.")
    if diagnosis:
        lines += diagnosis.lines()
    return lines

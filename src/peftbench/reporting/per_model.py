"""Runs of several models on the same data (`peftbench compare` of one folder per model): which method did best on
each model, and what each model cost to train and serve. Shared by report.md and report.html."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peftbench.analysis.recommend import significant
from peftbench.analysis.stats import Analysis, MethodSummary
from peftbench.store.schema import RunRecord

COLUMNS = [
    "model",
    "total params",
    "methods",
    "best here (test accuracy)",
    "train time a run (min)",
    "peak memory (MB)",
    "adapter size (MB)",
    "inference ms/example",
]


@dataclass
class ModelCosts:
    rows: list[list[str]]  # one per model, in COLUMNS' order
    best: list[tuple[str, MethodSummary]]  # each model's best method (analysis order), best model first


def model_costs(
    finished: list[RunRecord], analysis: Analysis | None, name_of: Callable[[RunRecord], str]
) -> ModelCosts | None:
    """Per model: its best method and the spread of its runs' costs; None unless the runs are of several models.
    `name_of` is the name a run's method has in the analysis (its folder and method, under compare)."""
    models = list(dict.fromkeys(r.config.model for r in finished))
    if len(models) < 2:
        return None
    summaries = {m.name: m for m in analysis.methods} if analysis else {}
    best = []
    rows = []
    for model in models:
        runs = [r for r in finished if r.config.model == model]
        names = list(dict.fromkeys(name_of(r) for r in runs))
        ranked = [summaries[n] for n in summaries if n in names]  # analysis.methods: best first
        if ranked:
            best.append((model, ranked[0]))
        rows.append(_row(model, runs, names, ranked[0] if ranked else None))
    best.sort(key=lambda pair: -pair[1].accuracy_mean)
    return ModelCosts(rows, best)


def _row(model: str, runs: list[RunRecord], names: list[str], best: MethodSummary | None) -> list[str]:
    results = [r.result for r in runs]
    # a method's adapters add parameters: the smallest total is the model's own
    totals = [t for t in (r.total_params for r in results) if t is not None]
    return [
        model,
        f"{min(totals):,}" if totals else "–",
        str(len(names)),
        f"{best.name} {best.accuracy_mean:.4f}" if best else "–",
        _spread([r.train_time_min for r in results], lambda v: f"{v:.2f}"),
        _spread([r.peak_memory_mb for r in results], lambda v: f"{v:.0f}"),
        _spread([r.adapter_size_mb for r in results], significant),  # 0.05 MB adapters beside 1 GB full copies
        _spread([r.inference_ms_per_example for r in results], lambda v: f"{v:.2f}"),
    ]


def _spread(values: list[float | None], show: Callable[[float], str]) -> str:
    """Lowest–highest over a model's runs (its methods and seeds)."""
    measured = [v for v in values if v is not None]
    if not measured:
        return "–"
    low, high = show(min(measured)), show(max(measured))
    return low if low == high else f"{low}–{high}"


def best_per_model_sentence(costs: ModelCosts) -> str:
    """The recommendation's answer to "which model": each model's best method, best model first."""
    each = "; ".join(f"{model}: {summary.name} {summary.accuracy_mean:.3f}" for model, summary in costs.best)
    return f"Best method of each model, best model first (test accuracy): {each}."

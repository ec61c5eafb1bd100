"""How sure the test figures are, and which differences between methods are real.

Everything here reads what a run stored about the split its accuracy is on: its predictions and the true
labels (`result.predictions`, `result.references`, in file order). The uncertainty is that of the test
examples — another draw of test reviews would give other figures — and comes from resampling them:
- a run's accuracy and macro-F1: a percentile bootstrap interval over test examples (scipy.stats.bootstrap);
- a method over seeds: the same for its seed-mean (each resample draws the same examples for every seed),
  next to the std over seeds, which is the other source of spread;
- method A against method B: both were tested on the same examples, so the comparison is paired: per
  example, A's share of seeds right minus B's; a bootstrap interval of the mean difference and a paired
  permutation test (scipy.stats.permutation_test, A and B swapped per example), corrected for the number
  of pairs compared with Holm's method (statsmodels);
- a run against the majority class: the same paired bootstrap against always predicting the most frequent
  class; a run whose interval of the difference reaches 0 is not better than that baseline.
Resampling is seeded, so the same runs always give the same intervals and verdicts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from peftbench.analysis.budget import Diagnosis, diagnose
from peftbench.analysis.classes import never_predicted
from peftbench.records import FINISHED, Status
from peftbench.store.schema import RunRecord

CONFIDENCE = 0.95  # of every interval
ALPHA = 0.05  # significance level of the pairwise tests, after Holm's correction
BOOTSTRAP_RESAMPLES = 1000
TAIL_RESAMPLES = 25  # resamples beyond each end of an interval, at the least (a 95% interval of 1000 has 25)
BOOTSTRAP_BATCH = 2000  # resamples held in memory at once
PERMUTATIONS = 9999  # the smallest p-value a test can give is 1 / (PERMUTATIONS + 1)
RANDOM_SEED = 0
NO_EVIDENCE = (
    "no interval, test or recommendation: no run stored its predictions with the true labels (runs made before "
    "peftbench recorded them)"
)


def has_evidence(record: RunRecord) -> bool:
    """Whether a run stored what the statistics need: predictions and true labels of the same examples."""
    predictions, references = record.result.predictions, record.result.references
    return bool(predictions) and references is not None and len(predictions or ()) == len(references)


def _rng() -> np.random.Generator:
    return np.random.default_rng(RANDOM_SEED)


def _bootstrap(
    statistic: Callable[..., Any], *samples: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(*samples, axis=-1), resampling examples (paired). Enough
    resamples that each tail holds at least TAIL_RESAMPLES of them, however far out the confidence puts it."""
    from scipy import stats

    if all(np.all(s == s[..., :1]) for s in samples):  # every example alike: no spread to resample
        value = float(statistic(*samples, axis=-1))
        return value, value
    found = stats.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=max(BOOTSTRAP_RESAMPLES, math.ceil(2 * TAIL_RESAMPLES / (1 - confidence))),
        batch=BOOTSTRAP_BATCH,
        confidence_level=confidence,
        method="percentile",
        rng=_rng(),
    )
    return float(found.confidence_interval.low), float(found.confidence_interval.high)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(values, axis=axis)


CLASS_CELLS = 4_000_000  # resamples × classes counted at once: about 100 MB of counts, whatever the class count


def macro_f1(references: np.ndarray, predictions: np.ndarray, classes: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unweighted mean of per-class F1 along `axis` (as scikit-learn's f1_score(average="macro") over
    `classes`, a class that is neither predicted nor present scoring 0), for many resamples at once.

    Counted with one bincount per resample block rather than a pass per class, so 20,000 classes cost what
    two do (a pass per class took ~4 ms per class per 2,000 examples: minutes per report)."""
    references, predictions = np.broadcast_arrays(np.moveaxis(references, axis, -1), np.moveaxis(predictions, axis, -1))
    lead, examples, count = references.shape[:-1], references.shape[-1], len(classes)
    truth = np.searchsorted(classes, references.reshape(-1, examples))
    guess = np.searchsorted(classes, predictions.reshape(-1, examples))
    rows = max(1, CLASS_CELLS // max(count, 1))
    scores = [
        _mean_f1(truth[start : start + rows], guess[start : start + rows], count)
        for start in range(0, len(truth), rows)
    ]
    return np.concatenate(scores).reshape(lead) if lead else np.concatenate(scores)[0]


def _mean_f1(truth: np.ndarray, guess: np.ndarray, count: int) -> np.ndarray:
    """Per row (a resample), the mean over `count` classes of 2·hits / (predicted + actual); 0 where both are 0."""
    cells = truth.shape[0] * count
    offset = np.arange(truth.shape[0])[:, None] * count
    actual = np.bincount((offset + truth).ravel(), minlength=cells)
    predicted = np.bincount((offset + guess).ravel(), minlength=cells)
    hits = np.bincount((offset + truth)[truth == guess], minlength=cells)
    denominator = (actual + predicted).reshape(-1, count)
    f1 = np.divide(2 * hits.reshape(-1, count), denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return f1.mean(axis=1)


@dataclass
class Evidence:
    """One method's test predictions over its seeds, on one shared set of test examples."""

    name: str
    references: np.ndarray  # (examples,)
    predictions: np.ndarray  # (seeds, examples)
    records: list[RunRecord]

    @property
    def share_right(self) -> np.ndarray:
        """Per example, the share of seeds that got it right."""
        return np.mean(self.predictions == self.references, axis=0)

    def classes(self) -> np.ndarray:
        return np.union1d(self.references, self.predictions.ravel())

    def f1_over_seeds(self, references: np.ndarray, *predictions: np.ndarray, axis: int = -1) -> np.ndarray:
        classes = self.classes()
        return np.mean([macro_f1(references, p, classes, axis) for p in predictions], axis=0)


def majority_correct(references: np.ndarray) -> np.ndarray:
    """Per example, whether always predicting the most frequent class is right."""
    values, counts = np.unique(references, return_counts=True)
    return (references == values[np.argmax(counts)]).astype(float)


def run_intervals(record: RunRecord) -> dict[str, Any]:
    """One run's accuracy and macro-F1 intervals, and whether it beats the majority class; {} without evidence."""
    predictions, references = record.result.predictions, record.result.references
    if not has_evidence(record) or predictions is None or references is None:
        return {}
    return dict(_run_intervals(tuple(predictions), tuple(references)))


@functools.lru_cache(maxsize=4096)  # a report asks for each run's intervals several times
def _run_intervals(predictions_seen: tuple[int, ...], references_seen: tuple[int, ...]) -> dict[str, Any]:
    references, predictions = np.asarray(references_seen), np.asarray(predictions_seen)
    classes = np.union1d(references, predictions)
    correct = (predictions == references).astype(float)
    over_majority = _bootstrap(_mean, correct - majority_correct(references))
    return {
        "accuracy_ci": _bootstrap(_mean, correct),
        "f1_macro_ci": _bootstrap(lambda r, p, axis=-1: macro_f1(r, p, classes, axis), references, predictions),
        "beats_majority": over_majority[0] > 0,
    }


@dataclass
class MethodSummary:
    """A method over its seeds: test figures with their uncertainty, and what it cost (means over seeds)."""

    name: str
    seeds: int
    accuracy_mean: float
    accuracy_std: float | None  # sample std over seeds; None for one seed
    accuracy_ci: tuple[float, float]  # of the seed-mean, over test examples
    f1_macro_mean: float
    f1_macro_ci: tuple[float, float]
    runs_not_better_than_majority: int
    trainable_params: float | None
    trainable_pct: float | None
    adapter_size_mb: float | None
    peak_memory_mb: float | None
    train_time_min: float | None
    inference_ms_per_example: float | None = None
    runs_missing_classes: int = 0  # runs that never predicted some class of the split (analysis.classes)
    missing_classes: list[str] = field(default_factory=list)  # those classes, over the runs


def simultaneous_confidence(pairs: int) -> float:
    """The confidence of each pairwise interval, so that all of them hold together with CONFIDENCE
    (Bonferroni): the intervals face the same multiplicity as the Holm-corrected tests beside them."""
    return 1 - (1 - CONFIDENCE) / max(pairs, 1)


@dataclass
class Comparison:
    """A against B on the same test examples (A the one with the higher mean accuracy)."""

    a: str
    b: str
    difference: float  # accuracy of A minus B, mean over seeds
    ci: tuple[float, float]  # simultaneous over all pairs compared (simultaneous_confidence)
    p_value: float
    p_holm: float
    significant: bool

    @property
    def disagrees(self) -> bool:
        """The interval and the test differ in verdict: they resample differently (bootstrap against
        permutations) and Holm's steps are less strict than Bonferroni's, so at the margin they can."""
        excludes_zero = self.ci[0] > 0 or self.ci[1] < 0
        return excludes_zero != self.significant


@dataclass
class Analysis:
    methods: list[MethodSummary]  # best mean accuracy first
    comparisons: list[Comparison] = field(default_factory=list)
    majority_accuracy: float | None = None
    left_out: str = ""  # why some runs are not in it, when that happens
    split: str = "test"  # the split the predictions are on: test, or eval for a protocol without a dev set
    diagnosis: Diagnosis | None = None  # what the training budget lets the verdicts say (analysis.budget)

    def comparison(self, a: str, b: str) -> Comparison | None:
        return next((c for c in self.comparisons if {c.a, c.b} == {a, b}), None)


def _mean_of(records: list[RunRecord], key: str) -> float | None:
    values = [getattr(r.result, key) for r in records if getattr(r.result, key) is not None]
    return float(np.mean(values)) if values else None


def _summarise(evidence: Evidence) -> MethodSummary:
    accuracies = np.mean(evidence.predictions == evidence.references, axis=1)
    f1s = evidence.f1_over_seeds(evidence.references, *evidence.predictions)
    records = evidence.records
    not_better = sum(
        r.status != Status.OK or not run_intervals(r)["beats_majority"] for r in records
    )  # a collapsed or diverged run counts as not better whatever its figure
    missed = [never_predicted(r) for r in records]
    return MethodSummary(
        name=evidence.name,
        seeds=len(records),
        accuracy_mean=float(accuracies.mean()),
        accuracy_std=float(accuracies.std(ddof=1)) if len(records) > 1 else None,
        accuracy_ci=_bootstrap(_mean, evidence.share_right),
        f1_macro_mean=float(np.mean(f1s)),
        f1_macro_ci=_bootstrap(evidence.f1_over_seeds, evidence.references, *evidence.predictions),
        runs_not_better_than_majority=not_better,
        trainable_params=_mean_of(records, "trainable_params"),
        trainable_pct=_mean_of(records, "trainable_pct"),
        adapter_size_mb=_mean_of(records, "adapter_size_mb"),
        peak_memory_mb=_mean_of(records, "peak_memory_mb"),
        train_time_min=_mean_of(records, "train_time_min"),
        inference_ms_per_example=_mean_of(records, "inference_ms_per_example"),
        runs_missing_classes=sum(bool(m) for m in missed),
        missing_classes=list(dict.fromkeys(c.label for m in missed for c in m)),
    )


def _compare(a: Evidence, b: Evidence, confidence: float) -> tuple[float, tuple[float, float], float]:
    """Mean accuracy difference of A over B, its interval at `confidence` and the two-sided paired permutation
    p-value."""
    from scipy import stats

    differences = a.share_right - b.share_right
    interval = _bootstrap(_mean, differences, confidence=confidence)
    # Under the null hypothesis A and B are exchangeable on every example: the sign of each difference is a
    # coin flip. Examples where both did equally well flip to themselves and only scale the mean, so the
    # test runs on the others alone (same p-value, a fraction of the work).
    discordant = differences[differences != 0]
    if discordant.size < 2:  # with one example apart, its two signs give the same |mean|: p is exactly 1
        return float(np.mean(differences)), interval, 1.0
    test = stats.permutation_test(
        (discordant,),
        _mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=PERMUTATIONS,
        alternative="two-sided",
        rng=_rng(),
    )
    return float(np.mean(differences)), interval, float(test.pvalue)


def gather(records: list[RunRecord], name_of: Callable[[RunRecord], str]) -> tuple[list[Evidence], str]:
    """The evidence per method, from the finished runs that stored it and share one set of test examples."""
    usable = [r for r in records if r.status in FINISHED and has_evidence(r)]
    if not usable:
        return [], NO_EVIDENCE
    sets: dict[tuple[int, ...], list[RunRecord]] = {}
    for record in usable:
        sets.setdefault(tuple(record.result.references or ()), []).append(record)
    shared = max(sets.values(), key=len)
    left_out = ""
    if len(sets) > 1:
        left_out = (
            f"the runs were tested on {len(sets)} different sets of examples; only the {len(shared)} runs of "
            "the largest are compared"
        )
    by_method: dict[str, list[RunRecord]] = {}
    for record in shared:
        by_method.setdefault(name_of(record), []).append(record)
    references = np.asarray(shared[0].result.references)
    evidence = [
        Evidence(name, references, np.asarray([r.result.predictions for r in runs]), runs)
        for name, runs in by_method.items()
    ]
    return evidence, left_out


def analyse(records: list[RunRecord], name_of: Callable[[RunRecord], str]) -> Analysis | None:
    """Per-method summaries with intervals and every pairwise comparison, Holm-corrected; None without evidence."""
    from statsmodels.stats.multitest import multipletests

    evidence, left_out = gather(records, name_of)
    if not evidence:
        return None
    summaries = {e.name: _summarise(e) for e in evidence}
    evidence.sort(key=lambda e: -summaries[e.name].accuracy_mean)
    pairs = [(a, b) for i, a in enumerate(evidence) for b in evidence[i + 1 :]]
    raw = [_compare(a, b, simultaneous_confidence(len(pairs))) for a, b in pairs]
    comparisons = []
    if raw:
        reject, corrected, _, _ = multipletests([p for _, _, p in raw], alpha=ALPHA, method="holm")
        for (a, b), (difference, interval, p), p_holm, significant in zip(pairs, raw, corrected, reject):
            comparisons.append(Comparison(a.name, b.name, difference, interval, p, float(p_holm), bool(significant)))
    majority = float(np.mean(majority_correct(evidence[0].references)))
    split = evidence[0].records[0].result.predictions_split or "test"
    diagnosis = diagnose({e.name: e.records for e in evidence})
    return Analysis([summaries[e.name] for e in evidence], comparisons, majority, left_out, split, diagnosis)

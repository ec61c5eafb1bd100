"""Per-class figures of a run, from the predictions and true labels it stored.

Accuracy and macro-F1 can read well while a run never predicts some classes: with ten classes, a run that
never predicts two of them scores zero recall there and still looks `ok`. These are counted here, shown per
run in the reports (classes.csv, and a table for data with more than two classes), and a method whose runs
miss a class is never recommended without saying so (analysis.recommend).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peftbench.store.schema import RunRecord


@dataclass(frozen=True)
class ClassScores:
    """One class on the split a run's predictions are of."""

    label: str
    support: int  # examples of the class
    predicted: int  # examples the run predicted as it
    correct: int

    @property
    def recall(self) -> float | None:
        return self.correct / self.support if self.support else None

    @property
    def precision(self) -> float | None:
        return self.correct / self.predicted if self.predicted else None


def _name(labels: list[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else str(index)


def class_scores(record: RunRecord) -> list[ClassScores]:
    """Every class of the data (or seen in the split), in label order; [] where the run stored no predictions."""
    predictions, references = record.result.predictions, record.result.references
    if not predictions or references is None or len(predictions) != len(references):
        return []
    predicted, truth = np.asarray(predictions), np.asarray(references)
    labels = record.data.label_names
    count = max(len(labels), int(max(predicted.max(), truth.max())) + 1)
    support = np.bincount(truth, minlength=count)
    guessed = np.bincount(predicted, minlength=count)
    correct = np.bincount(truth[truth == predicted], minlength=count)
    return [
        ClassScores(_name(labels, i), int(support[i]), int(guessed[i]), int(correct[i]))
        for i in range(count)
        if support[i] or guessed[i] or i < len(labels)
    ]


def never_predicted(record: RunRecord) -> list[ClassScores]:
    """The classes of the split that the run predicted for none of its examples: zero recall on each."""
    return [c for c in class_scores(record) if c.support and not c.predicted]


def classes_text(names: list[str]) -> str:
    """ "class X" or "classes X, Y" (names as they are to be shown)."""
    return ("classes " if len(names) > 1 else "class ") + ", ".join(names)

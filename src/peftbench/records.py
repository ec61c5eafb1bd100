"""What a run is called and how it ended: the vocabulary every layer shares, from the training loop that
decides a status to the reports that show it."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Status(str, enum.Enum):
    """How a run (or a trial of it) ended. A str, so it is written to and read from JSON as the plain word."""

    OK = "ok"
    COLLAPSED = "collapsed"  # one class took COLLAPSE_SHARE or more of the predictions: nothing useful learnt
    DIVERGED = "diverged"  # a non-finite loss stopped it
    FAILED = "failed"  # it raised, or its worker died: kept apart, never in the tables
    DRY_RUN = "dry_run"  # built and counted, not trained

    def __str__(self) -> str:
        return self.value


COLLAPSE_SHARE = 0.95  # a run predicting one class for >= 95% of eval examples has learnt nothing useful
FINISHED = (Status.OK, Status.COLLAPSED, Status.DIVERGED)  # a rerun skips these
TESTED = (Status.OK, Status.COLLAPSED)  # whose weights were evaluated on test and saved


def checked(cls: type[T], raw: Any) -> T:
    """A typed record (a dataclass) from plain data, every field checked against its type by pydantic (whose
    ValidationError says what is wrong); one adapter per class, built when first needed, so `peftbench --help`
    never imports pydantic."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        import pydantic

        adapter = _ADAPTERS.setdefault(cls, pydantic.TypeAdapter(cls))
    result: T = adapter.validate_python(raw)
    return result


_ADAPTERS: dict[type, Any] = {}


def run_id(method: str, seed: int) -> str:
    """A run's name in its folder: DIR/runs/<run_id>.json and DIR/<run_id>/ for its weights."""
    return f"{method}__seed{seed}"


class Scored(Protocol):
    """An evaluation as a stored record holds it (store.schema.Epoch)."""

    accuracy: float
    eval_loss: float


Evaluation = Mapping[str, Any] | Scored  # the training loop's metrics are a dict, a stored epoch is typed


def better_on_dev(candidate: Evaluation, best: Evaluation | None) -> bool:
    """The rule that chooses an epoch and a learning rate on dev: higher accuracy wins; a tie goes to the lower
    loss (the more confident of two equally right states)."""
    if best is None:
        return True
    return dev_order(candidate) > dev_order(best)


def dev_order(evaluation: Evaluation) -> tuple[float, float]:
    """better_on_dev's rule as a sort key: the larger, the better on dev."""
    if isinstance(evaluation, Mapping):
        return evaluation["accuracy"], -evaluation["eval_loss"]
    return evaluation.accuracy, -evaluation.eval_loss

"""Successive halving over a run's learning rates (`--search halving`), by Optuna's SuccessiveHalvingPruner.

The rates of --lr-grid train one after another, each in a worker of its own, as with the full grid. Each
trial reports its dev accuracy at every evaluation (after each epoch, and every --eval-every steps) to one
Optuna study that all of a run's trials share, kept in a journal file in the run's scratch folder (file
locks, so workers in other processes and on other machines of a shared folder see one study). At a rung's
step (the first evaluation's step × 3^k), a trial that is not among the best third of the trials that
reached that rung (with fewer than six there: not the best) stops there, so that compute goes to the
rates that are doing well. The first rate never has a rival ahead of it and always trains in full; the
run then chooses on dev among the trials that trained in full.
"""

from __future__ import annotations

from typing import Any

REDUCTION_FACTOR = 3  # a third of the trials at a rung go on to the next; rungs at r, 3r, 9r, ... steps


class HalvingTrial:
    """One rate's trial in its run's study: reports each evaluation, says when to stop, tells how it ended."""

    def __init__(self, journal: str, study_name: str, first_rung_steps: int) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would fall between the bars
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(first_rung_steps, 1), reduction_factor=REDUCTION_FACTOR
        )
        self.study = optuna.create_study(
            study_name=study_name,
            storage=JournalStorage(JournalFileBackend(journal)),
            pruner=pruner,
            direction="maximize",
            load_if_exists=True,
        )
        self.trial = self.study.ask()

    def should_stop(self, evaluation: dict[str, Any]) -> bool:
        """Report an evaluation's dev accuracy at its step; whether the trial stops here."""
        self.trial.report(float(evaluation["accuracy"]), int(evaluation["step"]))
        return bool(self.trial.should_prune())

    def finish(self, best_accuracy: float | None, stopped: bool) -> None:
        from optuna.trial import TrialState

        if stopped:
            self.study.tell(self.trial, state=TrialState.PRUNED)
        elif best_accuracy is None:
            self.study.tell(self.trial, state=TrialState.FAIL)
        else:
            self.study.tell(self.trial, best_accuracy)

"""runner/protocol.py: the phases of one run, with its workers replaced by answers written here. What is
checked is the guarantee of the protocol: the test split is read once, by the chosen weights alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peftbench.config.sections import DataConfig, GridConfig, TrainConfig
from peftbench.data import TokenizedData
from peftbench.execution.executors import Slot
from peftbench.methods import REGISTRY
from peftbench.records import Status
from peftbench.run.messages import Finished, Params, TrialOutcome, WorkRequest, WorkResponse
from peftbench.runner import protocol
from peftbench.runner.planning import PlannedRun
from peftbench.store.schema import RunConfig

EXAMPLES = [{"input_ids": [1, 2], "labels": 0}, {"input_ids": [1, 3], "labels": 1}]


def _epochs(*accuracies: float) -> list[dict[str, Any]]:
    return [
        {"epoch": i + 1, "accuracy": a, "f1_macro": a, "eval_loss": 1 - a, "eval_loss_sum": 1 - a}
        for i, a in enumerate(accuracies)
    ]


def _outcome(*dev: float) -> TrialOutcome:
    best = max(range(len(dev)), key=lambda i: dev[i]) + 1
    times = {"train_time_s": 1.0, "eval_time_s": 0.5, "train_steps": 4}
    speeds = {"train_it_per_s": 4.0, "eval_it_per_s": 2.0, "train_samples_per_s": 8.0}
    return TrialOutcome(status=Status.OK, epochs=_epochs(*dev), best_evaluation=best, **times, **speeds)


class Workers:
    """Stands where execution.workers.run_request stands: answers each request, and keeps them all."""

    def __init__(self, dev_by_rate: dict[float, tuple[float, ...]]) -> None:
        self.dev_by_rate = dev_by_rate
        self.requests: list[WorkRequest] = []

    def __call__(
        self,
        request: WorkRequest,
        folder: Path,
        inline: bool,
        env: dict[str, str],
        processes: int,
        warm_start: bool = True,
    ) -> WorkResponse:
        self.requests.append(request)
        params = Params(total_params=100, trainable_params=10, trainable_pct=10.0)
        if request.kind == "finish":
            return WorkResponse(params=params, finished=self._tested(), peak_memory_mb=5.0)
        outcome = _outcome(*self.dev_by_rate[request.lr])
        finished = self._tested() if request.finish_in_trial else None
        return WorkResponse(params=params, outcome=outcome, finished=finished, peak_memory_mb=3.0)

    @staticmethod
    def _tested() -> Finished:
        test = {
            "accuracy": 0.75,
            "f1_macro": 0.7,
            "eval_loss": 0.5,
            "eval_loss_sum": 0.5,
            "top_predicted_class_share": 0.5,
        }
        return Finished(status=Status.OK, test=test, predictions=[0, 1], adapter_size_mb=0.1)


def _job(tmp_path: Path, rates: tuple[float, ...] | None, select_only: bool = False) -> protocol.RunJob:
    train = TrainConfig(lr_grid=rates, lr=1e-3)
    grid = GridConfig("m", ["lora"], tmp_path, DataConfig(dev_size=0.1), train, select_only=select_only)
    stored_train = {"seed": 123, "epochs": 2, "batch_size": 8, "warmup_ratio": 0.0}
    config = RunConfig(model="m", method="lora", lr=1e-3, data={}, train=stored_train)
    run = PlannedRun(REGISTRY["lora"], train, config, "f" * 16, "lora__seed123")
    data = TokenizedData(EXAMPLES, EXAMPLES, EXAMPLES, ["a", "b"], 0.5, {"source": "d", "max_length": 8})
    return protocol.RunJob(run, grid, "model", data, tmp_path / "data.json", tmp_path / "work", "[1/1] lora__seed123")


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Workers:
    answers = Workers({1e-4: (0.6, 0.7), 1e-3: (0.8, 0.85), 1e-2: (0.9, 0.5)})
    monkeypatch.setattr(protocol, "run_request", answers)
    monkeypatch.setattr(protocol.hardware, "describe", lambda device: {"type": "cpu"})
    return answers


def test_an_lr_grid_trains_every_rate_then_tests_the_choice_once(workers: Workers, tmp_path: Path) -> None:
    outcome = _job(tmp_path, (1e-4, 1e-3, 1e-2))(Slot())
    kinds = [(r.kind, r.lr) for r in workers.requests]
    assert kinds == [("trial", 1e-4), ("trial", 1e-3), ("trial", 1e-2), ("finish", 1e-2)]  # 0.9 at epoch 1 wins
    assert not any(r.finish_in_trial for r in workers.requests[:3])  # no trial reads the test split
    finish = workers.requests[-1]
    assert finish.state_file and finish.state_file.endswith("trial2.safetensors")
    assert finish.outcome and finish.outcome.best_epoch == 1
    result = outcome.record.result
    assert result.chosen_lr == 1e-2 and result.chosen_epoch == 1 and result.dev_accuracy == 0.9
    assert result.accuracy == 0.75 and result.predictions_split == "test" and len(result.trials_tried()) == 3
    assert result.train_time_s == 3.0 and result.peak_memory_mb == 5.0  # every trial's cost; the highest peak
    assert outcome.weights == tmp_path / "work" / "weights"


def test_one_rate_finishes_in_its_own_trial(workers: Workers, tmp_path: Path) -> None:
    outcome = _job(tmp_path, None)(Slot())
    assert [(r.kind, r.finish_in_trial) for r in workers.requests] == [("trial", True)]
    assert outcome.record.status == Status.OK and outcome.record.result.accuracy == 0.75


def test_select_only_never_reads_the_test_split(workers: Workers, tmp_path: Path) -> None:
    outcome = _job(tmp_path, (1e-4, 1e-3), select_only=True)(Slot())
    assert [r.kind for r in workers.requests] == ["trial", "trial"]
    assert not any(r.finish_in_trial or r.state_file for r in workers.requests)
    result = outcome.record.result
    assert result.accuracy is None and result.chosen_lr == 1e-3 and outcome.weights is None


def test_a_failed_trial_stops_the_run_and_is_recorded(
    workers: Workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "run_request", lambda *args: WorkResponse.died("worker process killed by SIGKILL"))
    outcome = _job(tmp_path, (1e-4, 1e-3))(Slot())
    result = outcome.record.result
    assert result.status == Status.FAILED and result.worker_died and "SIGKILL" in (result.error or "")


def test_the_choice_is_the_best_epoch_on_dev_and_a_tie_keeps_the_first_rate() -> None:
    runs = ((1e-4, (0.8,)), (1e-3, (0.8,)), (1e-2, (0.7, 0.75)))
    trials = [protocol.TrialRun(lr, None, WorkResponse(outcome=_outcome(*dev))) for lr, dev in runs]
    assert protocol.choose(trials).lr == 1e-4

"""run/loop.py: the pieces of the one training loop that decide what a run records, without a model."""

from __future__ import annotations

import torch

from peftbench.run import loop


def test_the_loss_is_read_at_the_first_step_then_at_most_once_a_second(monkeypatch) -> None:
    clock = iter([0.0, 0.1, 0.2, 0.5, 1.5, 1.6, 1.7])
    monkeypatch.setattr(loop, "now", lambda: next(clock))
    reader = loop._LossReader(torch.device("cpu"))  # reads now() once: 0.0
    assert reader.add(torch.tensor(2.0), first_step=True) == 2.0  # the first step is always read (now: 0.1)
    assert reader.add(torch.tensor(4.0), first_step=False) is None  # 0.2 - 0.1 < 1 s: left on the device
    assert reader.add(torch.tensor(6.0), first_step=False) is None  # 0.5
    assert reader.add(torch.tensor(8.0), first_step=False) == 6.0  # 1.5: the mean of the three unread steps
    assert reader.add(torch.tensor(10.0), first_step=False) is None  # 1.7
    assert reader.epoch_mean() == 6.0  # every step counted once: (2 + 4 + 6 + 8 + 10) / 5


def test_a_run_predicting_one_class_is_called_collapsed() -> None:
    assert loop.collapse_note(0.95, "evaluation") == "95.0% of evaluation predictions are one class"
    assert loop.collapse_note(0.949, "test") is None

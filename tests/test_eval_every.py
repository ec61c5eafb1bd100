"""--eval-every: evaluations within epochs, the choice on dev among all of them; --patience: early stopping."""

from __future__ import annotations

import csv
import json

from peftbench.cli import main
from peftbench.run import loop

# 64 training examples in batches of 16: 4 optimiser steps an epoch
QUICK = ["--max-train-samples", "64", "--max-eval-samples", "32", "--batch-size", "16", "--max-length", "32"]
TUNED = ["--preset", "tuned", "--lr", "1e-3", "--methods", "lora", "--workers", "inline", "--no-progress"]


def _result(folder) -> dict:
    return json.loads((folder / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]


def test_evaluations_within_epochs_are_recorded_and_chosen_among(tiny_model, tmp_path):
    args = ["run", "--model", str(tiny_model), *TUNED, "--epochs", "2", "--eval-every", "3", "--out", str(tmp_path)]
    assert main(args + QUICK) == 0
    result = _result(tmp_path)
    # steps 3 and 6 within epochs, 4 and 8 at their ends
    assert [(e["epoch"], e["step"]) for e in result["epochs"]] == [(1, 3), (1, 4), (2, 6), (2, 8)]
    best = max(result["epochs"], key=lambda e: (e["accuracy"], -e["eval_loss"]))
    assert (result["chosen_epoch"], result["chosen_step"]) == (best["epoch"], best["step"])
    assert result["dev_accuracy"] == best["accuracy"]


def test_an_evaluation_at_an_epoch_s_last_step_is_not_repeated(tiny_model, tmp_path):
    args = ["run", "--model", str(tiny_model), *TUNED, "--epochs", "2", "--eval-every", "2", "--out", str(tmp_path)]
    assert main(args + QUICK) == 0
    assert [e["step"] for e in _result(tmp_path)["epochs"]] == [2, 4, 6, 8]


def test_patience_stops_a_trial_that_no_longer_improves_on_dev(tiny_model, tmp_path, monkeypatch):
    real, dev = loop.evaluate, iter([0.5, 0.7, 0.6, 0.6, 0.9, 0.9, 0.9, 0.9])

    def scripted(model, loader, accelerator, progress, label, loss_batch_size):
        metrics = real(model, loader, accelerator, progress, label, loss_batch_size)
        if label.endswith("test"):
            return metrics
        return {**metrics, "accuracy": next(dev), "eval_loss": 0.5}  # the 0.9s would come after the stop

    monkeypatch.setattr(loop, "evaluate", scripted)
    args = ["run", "--model", str(tiny_model), *TUNED, "--epochs", "2", "--eval-every", "1", "--patience", "2"]
    assert main([*args, "--out", str(tmp_path), *QUICK]) == 0
    result = _result(tmp_path)
    assert [e["accuracy"] for e in result["epochs"]] == [0.5, 0.7, 0.6, 0.6]
    assert (result["chosen_epoch"], result["chosen_step"], result["dev_accuracy"]) == (1, 2, 0.7)
    assert "stopped early in epoch 1, step 4: 2 evaluations in a row not better on dev (--patience 2)" in result["note"]
    rows = (
        list(csv.DictReader((tmp_path / "trials.csv").open(encoding="utf-8")))
        if (tmp_path / "trials.csv").exists()
        else []
    )
    assert all("step" in row for row in rows)


def test_eval_every_and_patience_must_be_positive(tiny_model, tmp_path, capsys):
    for option in ("--eval-every", "--patience"):
        code = main(["run", "--model", str(tiny_model), *TUNED, option, "0", "--out", str(tmp_path / option), *QUICK])
        assert code == 2 and f"{option} must be a positive integer, got 0" in capsys.readouterr().err


def _scripted_dev(monkeypatch, accuracies: list[float]) -> None:
    """Dev evaluations answer these accuracies in turn (the test evaluation is the real one)."""
    real, dev = loop.evaluate, iter(accuracies)

    def scripted(model, loader, accelerator, progress, label, loss_batch_size):
        metrics = real(model, loader, accelerator, progress, label, loss_batch_size)
        return metrics if label.endswith("test") else {**metrics, "accuracy": next(dev), "eval_loss": 0.5}

    monkeypatch.setattr(loop, "evaluate", scripted)


def _search(tiny_model, folder, search: str) -> list[str]:
    grid = ["--lr-grid", "1e-3,3e-3,1e-2", "--search", search, "--epochs", "2", "--eval-every", "1"]
    return ["run", "--model", str(tiny_model), *TUNED, *grid, "--out", str(folder), *QUICK]


def test_halving_stops_a_rate_that_trails_at_a_rung_and_chooses_among_the_rates_trained_in_full(
    tiny_model, tmp_path, monkeypatch
):
    # The rates train nearest LoRA's recommended 3e-3 first: 3e-3, 1e-3, 1e-2. 8 steps a trial, an evaluation
    # after each: 3e-3 at 0.6 throughout, 1e-3 at 0.5 when the first rung (step 1) compares it with 3e-3,
    # 1e-2 at 0.7 throughout
    _scripted_dev(monkeypatch, [0.6] * 8 + [0.5] + [0.7] * 8)
    assert main(_search(tiny_model, tmp_path, "halving")) == 0
    result = _result(tmp_path)
    assert [t["lr"] for t in result["trials"]] == [3e-3, 1e-3, 1e-2]
    trials = {t["lr"]: t for t in result["trials"]}
    assert [trials[lr]["train_steps"] for lr in (3e-3, 1e-3, 1e-2)] == [8, 1, 8]
    assert [trials[lr].get("pruned_at_step") for lr in (3e-3, 1e-3, 1e-2)] == [None, 1, None]
    assert result["chosen_lr"] == 1e-2 and result["dev_accuracy"] == 0.7
    rows = list(csv.DictReader((tmp_path / "trials.csv").open(encoding="utf-8")))
    assert {(r["lr"], r["trial_steps"], r["pruned_at_step"]) for r in rows if r["lr"] == "0.001"} == {
        ("0.001", "1", "1")
    }


def test_the_full_grid_trains_every_rate_in_full(tiny_model, tmp_path, monkeypatch):
    _scripted_dev(monkeypatch, [0.6] * 8 + [0.5] * 8 + [0.7] * 8)
    assert main(_search(tiny_model, tmp_path, "grid")) == 0
    trials = _result(tmp_path)["trials"]
    assert [t["lr"] for t in trials] == [1e-3, 3e-3, 1e-2]  # the order given
    assert [t["train_steps"] for t in trials] == [8, 8, 8] and all("pruned_at_step" not in t for t in trials)


def test_halving_needs_rates_to_choose_among(tiny_model, tmp_path, capsys):
    code = main(["run", "--model", str(tiny_model), *TUNED, "--search", "halving", "--out", str(tmp_path), *QUICK])
    assert code == 2 and "--search halving chooses among the rates of --lr-grid" in capsys.readouterr().err


def test_a_rate_the_search_stopped_is_not_chosen_even_when_its_dev_score_was_higher():
    from peftbench.records import Status
    from peftbench.run.messages import TrialOutcome, WorkResponse
    from peftbench.runner.protocol import TrialRun, choose

    def trial(lr, accuracy, pruned_at):
        outcome = TrialOutcome(
            status=Status.OK,
            epochs=[{"epoch": 1, "step": 1, "accuracy": accuracy, "eval_loss": 0.5}],
            best_evaluation=1,
            pruned_at_step=pruned_at,
        )
        return TrialRun(lr, None, WorkResponse(outcome=outcome))

    assert choose([trial(1e-3, 0.7, None), trial(1e-2, 0.9, 1)]).lr == 1e-3


def test_a_search_stopped_half_way_goes_on_at_its_next_rate(tiny_model, tmp_path, monkeypatch, capsys):
    from peftbench.run.messages import TRIAL, WorkResponse
    from peftbench.runner import protocol

    real, trained, evaluate = protocol.run_request, [], loop.evaluate

    def worker(request, *args, **kwargs):
        if request.kind == TRIAL:
            trained.append(request.lr)
            if dying and len(trained) == 2:  # the process stopped during the second rate's trial
                return WorkResponse.died("killed")
        return real(request, *args, **kwargs)

    monkeypatch.setattr(protocol, "run_request", worker)
    dying = True
    _scripted_dev(monkeypatch, [0.6] * 8)  # 3e-3 trains in full at 0.6
    main(_search(tiny_model, tmp_path, "halving"))
    kept = tmp_path / "unfinished" / "lora__seed123"
    assert {p.name for p in kept.iterdir()} == {"trial0.json", "trial0.safetensors", "search0.journal"}
    dying, trained[:] = False, []
    monkeypatch.setattr(loop, "evaluate", evaluate)
    # 1e-3 at 0.5 meets 3e-3's 0.6 at the first rung, as in one attempt, so it stops there: the study came back
    _scripted_dev(monkeypatch, [0.5] + [0.7] * 8)
    assert main(_search(tiny_model, tmp_path, "halving")) == 0
    assert trained == [1e-3, 1e-2]  # 3e-3 was taken as it ended
    assert "1 trial(s) of an interrupted attempt taken as they ended (lr 0.003)" in capsys.readouterr().err
    result = _result(tmp_path)
    trials = {t["lr"]: t for t in result["trials"]}
    assert [trials[lr]["train_steps"] for lr in (3e-3, 1e-3, 1e-2)] == [8, 1, 8]
    assert result["chosen_lr"] == 1e-2 and result["accuracy"] is not None
    assert not (tmp_path / "unfinished").exists()  # gone once the record is stored

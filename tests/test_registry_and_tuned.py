"""Every registered method trains; the tuned preset chooses on dev and reads the test split once."""

import json

import pytest
import torch
from synthetic_records import synthetic_record

from peftbench.cli import main
from peftbench.config.sections import DataConfig, TrainConfig
from peftbench.data import load_labeled_texts, split
from peftbench.methods import GROUPS, REGISTRY
from peftbench.models.classifier import load_classifier
from peftbench.reporting.markdown import summary_over_seeds
from peftbench.run import loop as train_module
from peftbench.run.loop import store_frozen_weights_in, train_step

QUICK = [
    "--max-train-samples",
    "96",
    "--max-eval-samples",
    "48",
    "--batch-size",
    "16",
    "--max-length",
    "32",
    "--no-progress",
]


def test_registry_has_the_methods_users_ask_for():
    assert len(REGISTRY) >= 15
    assert GROUPS["all"] == list(REGISTRY)
    for method in REGISTRY.values():
        assert 0 < method.recommended_lr < 1 and method.summary and method.source, method.name


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_takes_two_steps_on_the_shared_path(name, tiny_model):
    """Build, cast frozen weights to bf16, two optimiser steps under autocast: trainable weights move."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    method = REGISTRY[name]
    model = method.build(load_classifier(str(tiny_model), 2, ["a", "b"], 0, "eager"), total_steps=2)
    store_frozen_weights_in(model, torch.bfloat16)
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    optimizer = train_module.build_optimizer(model, TrainConfig(), 1e-2, accelerator.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    before = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
    ids = torch.randint(5, 500, (4, 9))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 1, 0])}
    losses = []
    for step in (1, 2):
        hook = (lambda: method.after_step(accelerator.unwrap_model(model), step)) if method.after_step else None  # noqa: B023
        losses.append(train_step(model, batch, optimizer, scheduler, accelerator, hook).item())
    assert all(loss == loss for loss in losses)  # finite, not NaN
    moved = [
        n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach().float(), before[n])
    ]
    assert moved, f"{name}: no trainable weight changed"
    assert any("classifier" in n for n in moved), f"{name}: the head is not trained"


def test_tuned_split_is_stratified_80_10_10():
    config = DataConfig(dev_size=0.1)
    parts = split(load_labeled_texts(config), config)
    sizes = [len(parts.train.texts), len(parts.eval.texts), len(parts.test.texts)]
    assert sum(sizes) == 7765 and abs(sizes[1] - 776) <= 1 and abs(sizes[2] - 777) <= 1
    shares = [sum(p.labels) / len(p.labels) for p in (parts.train, parts.eval, parts.test)]
    assert max(shares) - min(shares) < 0.005, shares  # stratified: same positive share in every part
    assert not set(parts.test.texts) & set(parts.eval.texts) - set(parts.train.texts)


def test_selection_never_reads_the_test_split(tiny_model, tmp_path, monkeypatch):
    seen = []  # which split each evaluation read, and when

    real_evaluate = train_module.evaluate

    def spy(model, loader, *args, **kwargs):
        texts = {tuple(e["input_ids"]) for e in loader.dataset}
        seen.append(texts)
        return real_evaluate(model, loader, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", spy)
    args = [
        "run",
        "--model",
        str(tiny_model),
        "--preset",
        "tuned",
        "--methods",
        "lora",
        "--lr-grid",
        "1e-3,1e-2",
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
        "--workers",
        "inline",
    ]
    assert main(args + QUICK) == 0
    result = json.loads((tmp_path / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]
    # 2 rates × 2 epochs on dev, then one evaluation of the test split, last
    assert len(seen) == 5
    dev, test = seen[0], seen[-1]
    assert all(s == dev for s in seen[:4]) and not (test & dev)
    assert result["chosen_lr"] in (1e-3, 1e-2) and result["chosen_epoch"] in (1, 2)
    trial = next(t for t in result["trials"] if t["lr"] == result["chosen_lr"])
    best_dev = max(e["accuracy"] for t in result["trials"] for e in t["epochs"])
    assert result["dev_accuracy"] == best_dev == trial["epochs"][result["chosen_epoch"] - 1]["accuracy"]
    assert result["accuracy"] == result["test"]["accuracy"] and result["test_time_s"] > 0


def test_lr_grid_without_dev_set_is_refused(tiny_model, tmp_path, capsys):
    code = main(["run", "--model", str(tiny_model), "--lr-grid", "1e-3,1e-2", "--out", str(tmp_path / "o")] + QUICK)
    assert code == 2 and "--dev-size" in capsys.readouterr().err


def _record(method, seed, accuracy, status="ok"):
    return synthetic_record(
        method, seed, status=status, accuracy=accuracy, f1_macro=accuracy, trainable_params=10, train_time_min=1.0
    )


def test_mean_and_std_are_over_each_methods_own_seeds():
    records = [
        _record("lora", 0, 0.90),
        _record("lora", 1, 0.80),
        _record("full", 0, 0.70),
        _record("full", 1, 0.72),
        _record("full", 2, 0.74),
        _record("ia3", 0, None, status="failed"),
    ]
    summary = summary_over_seeds(records)
    assert list(summary.index) == ["lora", "full"]  # sorted by mean accuracy; the failed run is left out
    assert summary.loc["lora", "seeds"] == 2 and summary.loc["full", "seeds"] == 3
    assert summary.loc["lora", "accuracy_mean"] == pytest.approx(0.85)
    assert summary.loc["lora", "accuracy_std"] == pytest.approx(0.0707107, rel=1e-5)  # sample std
    assert summary.loc["full", "accuracy_std"] == pytest.approx(0.02)
    assert (summary.loc["full", "accuracy_min"], summary.loc["full", "accuracy_max"]) == (0.70, 0.74)


def test_seeds_are_runs_of_their_own_and_extend_a_grid(tiny_model, tmp_path, capsys):
    base = [
        "run",
        "--model",
        str(tiny_model),
        "--methods",
        "bitfit",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--workers",
        "inline",
    ] + QUICK
    assert main(base + ["--seeds", "0,1"]) == 0
    assert main(base + ["--seeds", "0,1,2"]) == 0
    assert "1 run(s) done, 2 skipped" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"bitfit__seed{s}.json" for s in (0, 1, 2)]
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| bitfit | 3 |" in report


def test_a_tie_on_dev_accuracy_goes_to_the_lower_dev_loss():
    from peftbench.records import Status, better_on_dev
    from peftbench.run.messages import TrialOutcome, WorkResponse
    from peftbench.runner.protocol import TrialRun, choose

    epoch1, epoch2 = {"accuracy": 0.8, "eval_loss": 0.45}, {"accuracy": 0.8, "eval_loss": 0.41}
    assert better_on_dev(epoch2, epoch1) and not better_on_dev(epoch1, epoch2)
    assert better_on_dev({"accuracy": 0.81, "eval_loss": 0.9}, epoch2)  # accuracy first
    outcomes = [
        (1e-3, {"best_evaluation": 2, "epochs": [epoch1, epoch2]}),
        (1e-2, {"best_evaluation": 1, "epochs": [{"accuracy": 0.8, "eval_loss": 0.40}]}),
        (1e-1, {"best_evaluation": None, "epochs": []}),  # diverged before its first evaluation
    ]
    trials = [TrialRun(lr, None, WorkResponse(outcome=TrialOutcome(status=Status.OK, **o))) for lr, o in outcomes]
    assert choose(trials).lr == 1e-2


def test_restoring_a_state_is_strict_about_the_trainable_weights(tiny_model):
    from peftbench.run.loop import restore_trainable, trainable_state

    model = REGISTRY["lora"].build(load_classifier(str(tiny_model), 2, ["a", "b"], 0))
    state = trainable_state(model)
    restore_trainable(model, state)  # the frozen weights are absent by design: fine
    with pytest.raises(RuntimeError, match="missing"):
        restore_trainable(model, {k: v for k, v in list(state.items())[1:]})
    with pytest.raises(RuntimeError, match="unexpected"):
        restore_trainable(model, {**state, "base_model.no_such.weight": torch.zeros(1)})


def test_no_registry_source_cites_test_accuracy():
    for method in REGISTRY.values():
        assert "test" not in method.source.lower(), f"{method.name}: {method.source}"


def test_swept_rates_are_the_ones_chosen_on_dev_in_the_committed_sweep():
    from pathlib import Path

    from peftbench.methods.sweeps import DEV_SWEEPS, SWEEP_FOLDER
    from peftbench.reporting.markdown import trial_dev_scores
    from peftbench.store.schema import read_record

    folder = Path(__file__).resolve().parents[1] / SWEEP_FOLDER
    assert len(DEV_SWEEPS) >= 10, "the committed comparison's methods take their rates from the dev sweep"
    for method, dev in DEV_SWEEPS.items():
        record = read_record(json.loads((folder / "runs" / f"{method}__seed0.json").read_text(encoding="utf-8")))
        assert record.config.select_only is True and record.result.accuracy is None, method
        assert record.provenance.git_dirty is False, method
        scores = {t.lr: t.best.accuracy for t in trial_dev_scores(record) if t.best is not None}
        assert scores == pytest.approx(dev, abs=5e-5), method
        assert REGISTRY[method].recommended_lr == record.result.chosen_lr, method

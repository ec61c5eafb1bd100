"""What the budget lets a report say (analysis.budget), and pairwise intervals that agree with their tests: on
runs written by hand, each diagnostic once where it must appear and once where it must not."""

from __future__ import annotations

import json

import numpy as np
from synthetic_records import synthetic_record

from peftbench.analysis.recommend import recommend, sentences
from peftbench.analysis.stats import _bootstrap, _mean, analyse
from peftbench.cli import main
from peftbench.reporting.markdown import display_name

EXAMPLES = 300
REFERENCES = (np.arange(EXAMPLES) % 3 == 0).astype(int)  # majority accuracy 2/3
RATES = (1e-4, 1e-3, 1e-2)
COSTS = {
    "trainable_params": 100,
    "trainable_pct": 0.1,
    "train_time_min": 1.0,
}  # what every report reads of a finished run


def _wrong(*indices: int) -> list[int]:
    """The references with these examples made wrong."""
    predictions = REFERENCES.copy()
    predictions[list(indices)] = 1 - predictions[list(indices)]
    return predictions.tolist()


def _epoch(epoch: int, accuracy: float, share: float = 0.6) -> dict:
    return {
        "epoch": epoch,
        "accuracy": accuracy,
        "eval_loss": 0.5,
        "f1_macro": accuracy,
        "top_predicted_class_share": share,
    }


def _run(method: str, seed: int, predictions: list[int], chosen: float, dev: list[float], share: float = 0.6, **kw):
    """A run that tried RATES (each with the dev accuracies `dev` over its epochs) and chose `chosen`."""
    epochs = [_epoch(i + 1, a, share) for i, a in enumerate(dev)]
    return synthetic_record(
        method,
        seed,
        config={"train": {"seed": seed, "epochs": len(dev), "batch_size": 64, "warmup_ratio": 0.06}},
        data={"source": "synthetic", "train_examples": 2048},
        predictions=predictions,
        references=REFERENCES.tolist(),
        accuracy=float(np.mean(np.asarray(predictions) == REFERENCES)),
        chosen_lr=chosen,
        epochs=epochs,
        trials=[{"lr": lr, "status": "ok", "epochs": epochs} for lr in RATES],
        **COSTS,
        **kw,
    )


def _records(dev_rising: bool, edge: bool, stuck: bool) -> list:
    right = REFERENCES.tolist()
    chosen = RATES[-1] if edge else RATES[1]
    dev = [0.80, 0.85] if dev_rising else [0.85, 0.80]
    records = [_run("good", s, right, chosen, dev) for s in (0, 1)]
    majority = [0] * EXAMPLES
    records += [_run("stuck", s, majority, RATES[1], [0.66, 0.66], share=1.0 if stuck else 0.7) for s in (0, 1)]
    return records


def _text(records: list) -> str:
    analysis = analyse(records, display_name)
    return "\n".join(sentences(recommend(analysis), analysis))


def test_the_budget_opens_the_recommendation():
    text = _text(_records(dev_rising=False, edge=False, stuck=False))
    assert text.splitlines()[0] == (
        "Budget: 64 optimiser steps a run, 4,096 examples seen (2,048 training examples × 2 epochs, batch 64)."
    )


def test_a_rate_chosen_at_the_end_of_its_grid_asks_to_widen_it():
    text = _text(_records(dev_rising=False, edge=True, stuck=False))
    assert (
        "The best rate may lie outside the grid tried: good chose the highest rate of 0.0001–0.01 in 2 of 2 runs"
        in text
    )
    assert "Widen it." in text
    assert "outside the grid" not in _text(_records(dev_rising=False, edge=False, stuck=False))


def test_a_run_still_rising_at_its_last_evaluation_is_said_to_be_still_learning():
    text = _text(_records(dev_rising=True, edge=False, stuck=False))
    assert "Still learning when training stopped (dev accuracy rose at the last evaluation): good (2 of 2 runs)" in text
    assert "Still learning" not in _text(_records(dev_rising=False, edge=False, stuck=False))


def test_one_evaluation_a_run_says_that_learning_cannot_be_told():
    record = _run("once", 0, REFERENCES.tolist(), RATES[1], [0.85])
    assert "Each run was evaluated once on dev, so whether it was still learning cannot be told" in _text([record])
    assert "cannot be told" not in _text(_records(dev_rising=False, edge=False, stuck=False))


def test_a_method_at_one_class_at_every_rate_gets_no_verdict_not_a_failure():
    stuck = _text(_records(dev_rising=False, edge=False, stuck=True))
    assert (
        "Did not learn within 64 steps at any rate tried (one class at every evaluation on dev): stuck "
        "(rates 0.0001, 0.001, 0.01). No verdict on these methods" in stuck
    )
    assert "Not better than the majority class" not in stuck
    learnt = _text(_records(dev_rising=False, edge=False, stuck=False))  # it left one class on dev, then failed test
    assert "Not better than the majority class (0.667): stuck (2 of 2 seeds)." in learnt
    assert "Did not learn" not in learnt


def test_a_method_that_never_learnt_is_never_recommended_and_its_grid_is_not_questioned():
    records = [_run("stuck", s, [0] * EXAMPLES, RATES[-1], [0.66, 0.67], share=1.0) for s in (0, 1)]
    analysis = analyse(records, display_name)
    recommendation = recommend(analysis)
    text = "\n".join(sentences(recommendation, analysis))
    assert recommendation.best is None and [m.name for m in recommendation.no_verdict] == ["stuck"]
    assert "No method learnt within the budget." in text
    assert "outside the grid" not in text and "Still learning" not in text


def _marginal() -> list:
    """Four methods, two pairs of near-copies: A and C 14 examples better than B and D, 4 worse (sign test p ~
    0.03 per pair). Unadjusted 95% intervals of those pairs exclude 0; Holm over the 6 pairs finds nothing."""
    methods = {
        "a": _wrong(*range(0, 4)),
        "b": _wrong(*range(100, 114)),
        "c": _wrong(*range(200, 204)),
        "d": _wrong(*range(150, 164)),
    }
    return [
        synthetic_record(
            m, 0, predictions=p, references=REFERENCES.tolist(), accuracy=float(np.mean(np.asarray(p) == REFERENCES))
        )
        for m, p in methods.items()
    ]


def test_pairwise_intervals_face_the_multiplicity_of_their_test():
    analysis = analyse(_marginal(), display_name)
    a_b = analysis.comparison("a", "b")
    differences = np.asarray(_wrong(*range(100, 114))) != REFERENCES
    unadjusted = _bootstrap(_mean, differences.astype(float) - (np.asarray(_wrong(*range(0, 4))) != REFERENCES))
    assert unadjusted[0] > 0, "the case: an unadjusted interval excludes 0"
    assert not a_b.significant
    for comparison in analysis.comparisons:
        excludes_zero = comparison.ci[0] > 0 or comparison.ci[1] < 0
        assert excludes_zero == comparison.significant and not comparison.disagrees


def test_the_pairwise_table_says_how_its_intervals_are_adjusted(tmp_path):
    (tmp_path / "runs").mkdir()
    for record in _marginal():
        (tmp_path / "runs" / f"{record.run_id}.json").write_text(json.dumps(record.to_dict()), encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| A vs B | difference | simultaneous 95% interval | p (Holm) | significant |" in report
    assert "at 99.17% each, so that all 6 hold together at 95% (Bonferroni" in report
    assert "simultaneous 95% interval" in (tmp_path / "report.html").read_text(encoding="utf-8")


CLASSES = [f"c{i}" for i in range(10)]
TEN = np.arange(200) % 10  # 20 examples of each of ten classes


def _ten_class_run(method: str, seed: int, missed: tuple[int, ...]):
    """Right on every example but those of the `missed` classes, which it calls class 0."""
    predictions = np.where(np.isin(TEN, missed), 0, TEN)
    return synthetic_record(
        method,
        seed,
        data={"source": "synthetic", "label_names": CLASSES, "train_examples": 100},
        predictions=predictions.tolist(),
        references=TEN.tolist(),
        accuracy=float(np.mean(predictions == TEN)),
        epochs=[_epoch(1, 0.9)],
        **COSTS,
    )


def test_a_run_that_never_predicts_a_class_is_flagged_and_its_method_not_recommended_silently(tmp_path):
    records = [_ten_class_run("blind", s, (3, 7)) for s in (0, 1)] + [_ten_class_run("weaker", s, ()) for s in (0, 1)]
    for r in records[2:]:  # weaker: predicts every class, but 60 examples wrong (blind: 40)
        r.result.predictions = [(t + 1) % 10 if i < 60 else t for i, t in enumerate(TEN.tolist())]
        r.result.accuracy = 0.7
    analysis = analyse(records, display_name)
    best = sentences(recommend(analysis), analysis)[1]
    assert best.startswith("Best: blind") and best.endswith(
        "Its runs never predicted classes c3, c7 (2 of 2 runs): zero recall there, whatever the accuracy."
    )
    (tmp_path / "runs").mkdir()
    for record in records:
        (tmp_path / "runs" / f"{record.run_id}.json").write_text(json.dumps(record.to_dict()), encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Per class (recall / precision on the test split" in report
    assert "| blind (seed 0) | 1.00 / 0.33 | 1.00 / 1.00 | 1.00 / 1.00 | 0.00 / – |" in report
    assert "- blind (seed 0) never predicted classes c3 (20 examples), c7 (20 examples): zero recall there" in report
    results = (tmp_path / "results.csv").read_text(encoding="utf-8").splitlines()
    assert results[0].endswith(",classes_never_predicted") and results[1].endswith(",c3;c7")
    classes = (tmp_path / "classes.csv").read_text(encoding="utf-8").splitlines()
    assert classes[0] == "method,seed,class,support,predicted,correct,recall,precision"
    assert "blind,0,c3,20,0,0,0.0," in classes
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Per class</h2>" in page and "never predicted classes c3" in page


def test_runs_that_predict_every_class_carry_no_such_caveat_and_two_classes_get_no_class_table(tmp_path):
    records = [_ten_class_run("seeing", s, ()) for s in (0, 1)]
    analysis = analyse(records, display_name)
    assert "never predicted" not in "\n".join(sentences(recommend(analysis), analysis))
    (tmp_path / "runs").mkdir()
    for record in _records(dev_rising=False, edge=False, stuck=False):
        (tmp_path / "runs" / f"{record.run_id}.json").write_text(json.dumps(record.to_dict()), encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 0
    assert "## Per class" not in (tmp_path / "report.md").read_text(encoding="utf-8")

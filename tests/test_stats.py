"""Intervals, pairwise verdicts and the recommendation, on runs whose predictions are known in advance."""

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from peftbench.analysis.recommend import Constraints, _cost, recommend, sentences
from peftbench.analysis.stats import analyse, macro_f1, run_intervals
from peftbench.cli import main
from peftbench.reporting.markdown import display_name
from peftbench.store.schema import RunRecord, read_record

TEMPLATE = json.loads(
    (Path(__file__).parent / "fixtures" / "schema1" / "lora__seed123.json").read_text(encoding="utf-8")
)
EXAMPLES = 300
REFERENCES = (np.arange(EXAMPLES) % 3 == 0).astype(int)  # one third class 1: majority accuracy 2/3


def _record(method: str, seed: int, predictions: np.ndarray, trainable: int, status: str = "ok") -> RunRecord:
    record = copy.deepcopy(TEMPLATE)
    record["run_id"] = f"{method}__seed{seed}"
    record["config"]["method"] = method
    record["config"]["train"]["seed"] = seed
    accuracy = float(np.mean(predictions == REFERENCES))
    # its dev evaluation predicts as its test predictions do (the template's was a collapsed run's)
    record["result"]["epochs"][0]["top_predicted_class_share"] = float(np.bincount(predictions).max() / EXAMPLES)
    record["result"].update(
        status=status,
        predictions=predictions.tolist(),
        references=REFERENCES.tolist(),
        accuracy=accuracy,
        f1_macro=float(macro_f1(REFERENCES, predictions, np.array([0, 1]))),
        trainable_params=trainable,
        trainable_pct=100 * trainable / 121506,
        adapter_size_mb=trainable * 4 / 2**20,
        peak_memory_mb=100.0 + trainable / 100,
        train_time_min=1.0,
        inference_ms_per_example=10_000 / trainable,  # the largest adapter here is the cheapest to serve
        majority_accuracy=2 / 3,
    )
    return read_record(record)


def _flip(count: int, seed: int) -> np.ndarray:
    """The references with `count` examples made wrong."""
    predictions = REFERENCES.copy()
    wrong = np.random.default_rng(seed).choice(EXAMPLES, count, replace=False)
    predictions[wrong] = 1 - predictions[wrong]
    return predictions


@pytest.fixture(scope="module")
def records():
    chance = [np.random.default_rng(10 + s).integers(0, 2, EXAMPLES) for s in (0, 1)]
    return [
        *(_record("perfect", s, REFERENCES.copy(), 5000) for s in (0, 1)),  # right on every example
        *(_record("nearly", s, _flip(2, s), 800) for s in (0, 1)),  # two examples wrong per seed
        *(_record("weaker", s, _flip(45, s), 300) for s in (0, 1)),  # 85% right: clearly worse than perfect
        *(_record("chance", s, chance[s], 100) for s in (0, 1)),  # coin flips: about 50%
    ]


def test_run_intervals_contain_the_accuracy_and_shrink_to_a_point_when_every_example_is_right(records):
    perfect = run_intervals(records[0])
    assert perfect["accuracy_ci"] == (1.0, 1.0) and perfect["beats_majority"]
    weaker = run_intervals(records[4])
    low, high = weaker["accuracy_ci"]
    assert low < records[4].result.accuracy < high and 0.02 < high - low < 0.15
    f1_low, f1_high = weaker["f1_macro_ci"]
    assert f1_low < records[4].result.f1_macro < f1_high
    assert not run_intervals(records[6])["beats_majority"]  # chance is below the majority class's 2/3
    assert run_intervals(records[6]) == run_intervals(copy.deepcopy(records[6])), "resampling is seeded"


def test_macro_f1_matches_scikit_learn():
    from sklearn.metrics import f1_score

    predictions = _flip(40, 3)
    assert macro_f1(REFERENCES, predictions, np.array([0, 1])) == pytest.approx(
        f1_score(REFERENCES, predictions, average="macro")
    )


def test_significance_verdicts_follow_the_predictions(records):
    analysis = analyse(records, display_name)
    assert [m.name for m in analysis.methods] == ["perfect", "nearly", "weaker", "chance"]
    assert len(analysis.comparisons) == 6
    assert not analysis.comparison("perfect", "nearly").significant  # 2 of 300 apart: a tie
    assert analysis.comparison("perfect", "weaker").significant
    assert analysis.comparison("perfect", "chance").significant
    assert analysis.comparison("weaker", "chance").significant
    tie = analysis.comparison("perfect", "nearly")
    assert tie.ci[0] <= 0 <= tie.ci[1] and tie.p_holm >= tie.p_value
    chance = analysis.methods[-1]
    assert chance.runs_not_better_than_majority == 2 and analysis.methods[0].runs_not_better_than_majority == 0
    assert chance.accuracy_ci[0] < chance.accuracy_mean < chance.accuracy_ci[1]


def test_recommendation_names_the_best_its_ties_the_cheapest_and_the_failures(records):
    analysis = analyse(records, display_name)
    recommendation = recommend(analysis)
    assert recommendation.best.name == "perfect"
    assert [m.name for m in recommendation.tied] == ["nearly"]
    assert recommendation.cheapest["fewest trainable parameters"].name == "nearly"
    text = "\n".join(sentences(recommendation, analysis))
    assert "Best: perfect, accuracy 1.000 [1.000, 1.000]" in text
    assert (
        "Tied with it" in text
        and "nearly 0.993" in text
        and "weaker" not in text.split("Tied with it")[1].split("\n")[0]
    )
    assert "fewest trainable parameters: nearly (800" in text
    everything = dataclasses.replace(recommendation.best, trainable_pct=100.0)  # full fine-tuning's share
    assert _cost("fewest trainable parameters", everything).endswith(", 100% of the model")  # not "1e+02%"
    assert _cost("smallest adapter", dataclasses.replace(everything, adapter_size_mb=1020.0)) == "1020 MB"
    assert recommendation.cheapest["cheapest at inference"].name == "perfect"
    assert "cheapest at inference: perfect (2 ms an example at batch 1)" in text
    assert "Not better than the majority class (0.667): chance (2 of 2 seeds)." in text


def test_a_constraint_re_ranks(records):
    analysis = analyse(records, display_name)
    recommendation = recommend(analysis, Constraints(max_trainable_params=500))
    assert recommendation.best.name == "weaker"  # perfect and nearly train more than 500 parameters
    assert [m.name for m in recommendation.excluded] == ["perfect", "nearly"]
    text = "\n".join(sentences(recommendation, analysis))
    assert "Constraint: at most 500 trainable parameters; left out: perfect, nearly." in text
    # chance never beat the majority class, so weaker was tested against nothing: no "significantly worse" claim
    assert "It is the only method within the constraint that beat the majority class" in text
    assert "No other method is tied with it" not in text


def test_a_best_method_compared_with_none_is_not_called_significantly_better(records):
    def text(kept):
        analysis = analyse([r for r in records if r.config.method in kept], display_name)
        return "\n".join(sentences(recommend(analysis), analysis))

    assert "No other method is tied with it: each is significantly worse" in text({"perfect", "weaker"})
    alone = text({"weaker"})
    assert "It is the only method run, so it was compared with none." in alone and "significantly" not in alone
    with_chance = text({"weaker", "chance"})  # chance never beat the majority class: nothing to test weaker against
    assert "It is the only method that beat the majority class, so it was compared with none." in with_chance
    assert "No other method is tied" not in with_chance


def test_report_command_writes_the_recommendation_and_the_pairwise_table(records, tmp_path):
    for record in records:
        path = tmp_path / "runs" / f"{record.run_id}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(record.to_dict()), encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert report.index("## Recommendation") < report.index("## Summary over seeds")
    assert "- Best: perfect" in report and "| perfect vs chance | +0.4" in report
    assert "| perfect vs nearly | +0.0067 |" in report and report.count("| yes |") == 5
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Best: perfect" in page and "Which differences are real" in page
    assert main(["report", str(tmp_path), "--max-memory-mb", "110"]) == 0
    assert "- Best: nearly" in (tmp_path / "report.md").read_text(encoding="utf-8")  # perfect peaks at 150 MB
    header = (tmp_path / "results.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "accuracy_ci_low" in header and "beats_majority" in header
    with pytest.raises(SystemExit) as exited:
        main(["report", str(tmp_path), "--max-memory-mb", "-1"])
    assert exited.value.code == 2


def test_runs_without_true_labels_get_a_report_that_says_why_there_is_no_answer(tmp_path):
    record = copy.deepcopy(TEMPLATE)  # written before runs recorded their true labels
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "lora__seed123.json").write_text(json.dumps(record), encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "- No interval, test or recommendation: no run stored its predictions with the true labels" in report
    assert "Which differences are real" not in report


def test_two_methods_one_example_apart_are_tied_and_nothing_breaks():
    majority = np.zeros(EXAMPLES, dtype=int)
    almost = majority.copy()
    almost[0] = 1  # one example apart: too few for a permutation test, exactly p = 1
    analysis = analyse([_record("constant", 0, majority, 10), _record("almost", 0, almost, 10)], display_name)
    comparison = analysis.comparison("constant", "almost")
    assert comparison.p_value == 1.0 and not comparison.significant


def test_a_report_that_cannot_be_built_does_not_stop_the_grid(tiny_model, tmp_path, monkeypatch, capsys):
    from peftbench.runner import scheduling

    real = scheduling.write_reports
    calls = []

    def broken(root, *args, **kwargs):
        calls.append(root)
        if len(calls) == 1:  # the report after the first run
            raise ValueError("statistics broke")
        return real(root, *args, **kwargs)

    monkeypatch.setattr(scheduling, "write_reports", broken)
    args = [
        "run",
        "--model",
        str(tiny_model),
        "--methods",
        "bitfit,ia3",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--workers",
        "inline",
        "--max-train-samples",
        "32",
        "--max-eval-samples",
        "16",
        "--batch-size",
        "16",
        "--max-length",
        "16",
        "--no-progress",
    ]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["bitfit__seed123.json", "ia3__seed123.json"]
    assert "could not rebuild the reports (ValueError: statistics broke); the runs are saved" in capsys.readouterr().err

"""--report-to: one grid logged to TensorBoard, MLflow and trackio, each with its local store, and the
logged loss and final accuracy read back through each library's own reader."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from peftbench import cli
from peftbench.config.sections import DataConfig, GridConfig, TrainConfig
from peftbench.errors import UserError

# found, not imported: trackio reads TRACKIO_DIR when first imported, which the grid below must do
_missing = [name for name in ("tensorboard", "mlflow", "trackio") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(_missing), reason=f"tracker packages not installed: {', '.join(_missing)} (pip install -e '.[test]')"
)


def _same_series(got: list[tuple[int, float]], record: dict) -> None:
    """The logged (step, loss) pairs are the run's: same steps, same values (stored as float32 by some)."""
    want = [(step, loss) for step, loss, _ in record["result"]["train_log"]]
    assert [step for step, _ in got] == [step for step, _ in want]
    assert [value for _, value in got] == pytest.approx([value for _, value in want], rel=1e-6)


@pytest.fixture(scope="module")
def tracked(tiny_model, tmp_path_factory) -> tuple[Path, dict, Path]:
    out = tmp_path_factory.mktemp("tracked") / "grid"
    store = tmp_path_factory.mktemp("trackio")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRACKIO_DIR", str(store))  # read when trackio is first imported: by the grid, below
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        args = [
            "run",
            "--model",
            str(tiny_model),
            "--methods",
            "lora",
            "--out",
            str(out),
            "--report-to",
            "tensorboard,mlflow,trackio",
        ]
        quick = [
            "--max-train-samples",
            "64",
            "--max-eval-samples",
            "32",
            "--batch-size",
            "16",
            "--epochs",
            "2",
            "--no-progress",
            "--workers",
            "inline",
        ]
        assert cli.main(args + quick) == 0
    record = json.loads((out / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))
    assert [step for step, _, _ in record["result"]["train_log"]] == list(range(1, 9))  # 4 steps a epoch, 2 epochs
    return out, record, store


def test_tensorboard_holds_the_loss_of_every_step_and_the_final_accuracy(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, record, _ = tracked
    events = EventAccumulator(str(out / "tensorboard" / "lora__seed123"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    _same_series(losses, record)
    assert events.Scalars("train/learning_rate")[0].value == pytest.approx(record["result"]["train_log"][0][2])
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(record["result"]["accuracy"])
    assert [e.value for e in events.Scalars("eval/accuracy")] == pytest.approx(
        [e["accuracy"] for e in record["result"]["epochs"]]
    )


def test_mlflow_holds_the_run_its_loss_its_config_and_the_final_accuracy(tracked):
    from mlflow.tracking import MlflowClient

    out, record, _ = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name(f"peftbench {out.resolve().name}")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "lora__seed123" and run.data.params["method"] == "lora"
    assert float(run.data.params["lr"]) == record["config"]["lr"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    _same_series(history, record)
    assert run.data.metrics["test/accuracy"] == pytest.approx(record["result"]["accuracy"])


def test_trackio_holds_the_run_its_loss_and_the_final_accuracy(tracked):
    from trackio.sqlite_storage import SQLiteStorage

    out, record, store = tracked
    assert (store / f"{out.resolve().name}.db").is_file()  # its local store, where TRACKIO_DIR said
    logs = SQLiteStorage.get_logs(out.resolve().name, "lora__seed123")
    losses = [(row["step"], row["train/loss"]) for row in logs if "train/loss" in row]
    _same_series(losses, record)
    finals = [row["test/accuracy"] for row in logs if "test/accuracy" in row]
    assert finals == pytest.approx([record["result"]["accuracy"]])


def test_unknown_tracker_is_a_one_line_error():
    def report_to(text):
        return GridConfig("m", ["lora"], Path("out"), DataConfig(), TrainConfig(), report_to=text).report_to

    with pytest.raises(UserError, match="--report-to: expected one of tensorboard, mlflow, trackio, got 'wandb'"):
        report_to("tensorboard,wandb")
    assert report_to("none") == () and report_to("TensorBoard, mlflow") == ("tensorboard", "mlflow")

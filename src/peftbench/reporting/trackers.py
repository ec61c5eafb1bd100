"""Experiment trackers (`--report-to tensorboard,mlflow,trackio`): each finished run is logged to each tracker
through that library's own API, as one tracked run named by the run id, grouped by grid.

Logged: the run's configuration, the training loss and learning rate of every optimiser step, the dev (or
eval) metrics of every epoch, and the final test metrics. The grid process logs a run when it stores the
run's record, so runs on other machines (Ray) and in other processes are logged alike; a tracker shows a
run once it has finished, not while it trains. Where each one writes:
- tensorboard: DIR/tensorboard/<run id>/ (`tensorboard --logdir DIR/tensorboard` shows the grid's runs together);
- mlflow: MLFLOW_TRACKING_URI, else a SQLite store, DIR/mlflow.db
  (`mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`); one experiment per grid (named by DIR);
- trackio: its local store (TRACKIO_DIR, default ~/.cache/huggingface/trackio); project = DIR's name, group =
  the method.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from peftbench.errors import UserError, first_line
from peftbench.records import Status
from peftbench.store.schema import RunRecord

# tracker name -> the module it needs, and the pip extra that installs it
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "trackio": ("trackio", "trackio"),
}


def check_installed(names: tuple[str, ...]) -> None:
    """Every tracker asked for can be imported: said before the first run, not after it."""
    for name in names:
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"--report-to {name} needs the {module} package: pip install 'peftbench[{extra}]'")


def written_paths(names: tuple[str, ...], out: Path) -> list[Path]:
    """What these trackers write inside --out (trackio writes to its own store, elsewhere by design)."""
    paths = [out / "tensorboard"] if "tensorboard" in names else []
    if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
        paths.append(out / "mlflow.db")
    return paths


def flat(values: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of scalar values ("train.lr": 3e-4), as trackers store parameters."""
    if isinstance(values, dict):
        found: dict[str, Any] = {}
        for key, value in values.items():
            found.update(flat(value, f"{prefix}{key}."))
        return found
    if isinstance(values, (list, tuple)):
        values = ",".join(map(str, values))
    return {
        prefix.rstrip("."): values if isinstance(values, (int, float, str, bool)) or values is None else str(values)
    }


Series = list[tuple[int, dict[str, float]]]  # (step, metrics) in step order


SCORES = ("accuracy", "f1_macro", "eval_loss")  # of each epoch, and of the final evaluation


def run_series(record: RunRecord) -> tuple[Series, dict[str, float]]:
    """What a tracker logs of a run: (step, metrics) in step order, and the final test (or eval) metrics."""
    result = record.result
    steps, epochs = result.train_log or [], result.epochs or []
    series: Series = [(int(step), {"train/loss": loss, "train/learning_rate": lr}) for step, loss, lr in steps]
    steps_per_epoch = math.ceil(len(steps) / len(epochs)) if epochs else 0
    split = "dev" if record.data.test_examples else "eval"
    for epoch in epochs:
        metrics = {f"{split}/{k}": getattr(epoch, k) for k in SCORES}
        series.append((epoch.epoch * steps_per_epoch, {**metrics, "epoch": epoch.epoch}))
    series.sort(key=lambda item: item[0])
    final = {f"test/{k}": getattr(result, k) for k in SCORES if getattr(result, k) is not None}
    return series, final


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _tensorboard(record: RunRecord, out: Path, config: dict[str, Any], series: Series, final: dict[str, float]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out / "tensorboard" / record.run_id)) as writer:
        writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))
        for step, metrics in series:
            for key, value in _finite(metrics).items():
                writer.add_scalar(key, value, step)
        last = series[-1][0] if series else 0
        for key, value in _finite(final).items():
            writer.add_scalar(key, value, last)


def _mlflow(record: RunRecord, out: Path, config: dict[str, Any], series: Series, final: dict[str, float]) -> None:
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(
        logging.WARNING
    )  # its INFO lines (tables created...) would split the grid's lines
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        # a SQLite store: MLflow 3 keeps its file store in maintenance mode and refuses it unless told otherwise
        mlflow.set_tracking_uri(f"sqlite:///{(out / 'mlflow.db').resolve()}")
    mlflow.set_experiment(f"peftbench {out.resolve().name}")
    with mlflow.start_run(
        run_name=record.run_id,
        tags={"peftbench.grid": str(out.resolve()), "peftbench.method": record.method},
    ):
        mlflow.log_params({k: "" if v is None else str(v)[:500] for k, v in config.items()})
        for step, metrics in series:
            mlflow.log_metrics(_finite(metrics), step=step)
        mlflow.log_metrics(_finite(final))


def _trackio(record: RunRecord, out: Path, config: dict[str, Any], series: Series, final: dict[str, float]) -> None:
    import trackio

    trackio.init(
        project=out.resolve().name,
        name=record.run_id,
        group=record.method,
        config=config,
        embed=False,
        auto_log_cpu=False,
        auto_log_gpu=False,  # this process only waits for the workers: its load says nothing
    )
    try:
        for step, metrics in series:
            trackio.log(_finite(metrics), step=step)
        if final:
            trackio.log(_finite(final), step=series[-1][0] if series else 0)
    finally:
        trackio.finish()


LOGGERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "trackio": _trackio}


def log_run(names: tuple[str, ...], record: RunRecord, out: Path) -> list[str]:
    """Log a stored run to each tracker; returns one line per tracker that failed (the run itself is saved)."""
    if not names or record.status in (Status.FAILED, Status.DRY_RUN):
        return []
    config = {"run_id": record.run_id, **flat(record.config.to_dict())}
    series, final = run_series(record)
    problems = []
    for name in names:
        try:
            LOGGERS[name](record, out, config, series, final)
        except Exception as exc:  # noqa: BLE001 - a tracker's trouble must not stop the grid
            problems.append(f"{name}: {type(exc).__name__}: {first_line(exc)}")
    return problems

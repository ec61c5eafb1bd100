"""Planning a grid: the data and tokenizer prepared once, every run of the grid with its identity, this job's
shard of them, and the ones still to do. Everything here can reject the input, before anything is written."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.config.sections import GridConfig, TrainConfig, as_dict
from peftbench.data import SplitTexts, length_keeping, load_split, token_lengths
from peftbench.errors import UserError
from peftbench.methods import REGISTRY, Method
from peftbench.models import classifier
from peftbench.records import run_id
from peftbench.store.identity import fingerprint, protocol_differences
from peftbench.store.runs import ResultStore
from peftbench.store.schema import RunConfig, RunRecord


@dataclass
class PlannedRun:
    method: Method
    train: TrainConfig  # the grid's, with this run's seed
    config: RunConfig  # what the run's record says was asked; its protocol is the run's identity
    fingerprint: str
    run_id: str

    @property
    def lr(self) -> float:
        """The learning rate of a run without an lr grid: the one given, else the method's recommended one."""
        assert self.config.lr is not None, "a planned run has a rate: the grid's or the method's"
        return float(self.config.lr)

    def learning_rates(self) -> list[float]:
        """The rates its trials train at: the lr grid's, else its one rate."""
        return self.train.learning_rates() or [self.lr]


@dataclass
class Prepared:
    """What the grid process sets up once for every run."""

    model_path: str
    max_length: int
    data_sha256: str
    model_identity: dict[str, Any]
    parts: SplitTexts
    tokenizer: Any
    head_note: str | None = None  # the checkpoint's head was trained for another number of labels
    given_sha256: dict[str, str] | None = None  # --dev-data, --test-data: each file's sha256

    @property
    def model_mb(self) -> float:
        """The size of the model's weight files, already listed for its identity (local folder or hub cache)."""
        return sum(self.model_identity.get("weights", {}).values()) / 2**20


def prepare(grid: GridConfig) -> Prepared:
    """Data split, tokenizer and max_length, once for every run."""
    parts = load_split(grid.data)
    model_path = classifier.resolve(grid.model)
    tokenizer = classifier.load_tokenizer(model_path)
    model_config = classifier.load_config(model_path)
    classifier.configure_padding(tokenizer, model_config)
    positions = getattr(model_config, "max_position_embeddings", None)
    requested = grid.data.max_length
    if isinstance(requested, str):  # auto: the training texts decide, the model caps
        limit = classifier.max_length_for(tokenizer, None, positions)
        kept_whole = length_keeping(token_lengths(tokenizer, parts.train, limit), grid.data.max_length_keep)
        max_length = min(limit, kept_whole)
    else:
        max_length = classifier.max_length_for(tokenizer, requested, positions)
    identity = classifier.identity(model_path)
    head_note = classifier.trained_head_note(model_config, len(parts.train.label_names))
    given = parts.given or None
    return Prepared(model_path, max_length, parts.train.sha256, identity, parts, tokenizer, head_note, given)


def plan(grid: GridConfig, prepared: Prepared) -> list[PlannedRun]:
    """Every run of the grid, seed by seed and method by method."""
    rates = chosen_rates(grid, prepared) if grid.train.lr_from is not None else {}
    return [_planned(grid, prepared, name, seed, rates) for seed in grid.run_seeds() for name in grid.methods]


def chosen_rates(grid: GridConfig, prepared: Prepared) -> dict[str, float]:
    """--lr-from DIR: each method's rate as its runs in DIR chose it on dev, for this model and data."""
    folder = Path(str(grid.train.lr_from))
    records = ResultStore(folder, read_only=True).records(include_failed=False) if folder.is_dir() else []
    searched = [r for r in records if r.config.train.get("lr_grid") and r.result.chosen_lr is not None]
    if not searched:
        raise UserError(f"--lr-from {folder}: no run there chose a learning rate on dev (a run with --lr-grid)")
    for record in searched:
        other = _other_experiment(record, prepared)
        if other:
            raise UserError(f"--lr-from {folder}: {record.run_id} chose its rate for {other}")
    rates = {}
    for name in grid.methods:
        chosen = {float(r.result.chosen_lr) for r in searched if r.config.method == name and r.result.chosen_lr}
        if not chosen:
            raise UserError(
                f"--lr-from {folder}: no run of {name} there chose a rate on dev; search it there first, or leave "
                "it out of --methods"
            )
        if len(chosen) > 1:
            shown = ", ".join(f"{rate:g}" for rate in sorted(chosen))
            raise UserError(f"--lr-from {folder}: the runs of {name} there chose different rates ({shown})")
        rates[name] = chosen.pop()
    return rates


def _other_experiment(record: RunRecord, prepared: Prepared) -> str | None:
    """What makes a run's chosen rate another experiment's: another model, or other data."""
    identity = record.config.model_identity
    if identity is not None and identity != prepared.model_identity:
        return f"another model ({record.config.model})"
    if record.data.sha256 is not None and record.data.sha256 != prepared.data_sha256:
        return f"other data ({record.data.source})"
    return None


def _planned(grid: GridConfig, prepared: Prepared, name: str, seed: int, rates: dict[str, float]) -> PlannedRun:
    method = REGISTRY[name]
    train = dataclasses.replace(grid.train, seed=seed)
    data = {
        **as_dict(grid.data),
        "max_length": prepared.max_length,
        # the length used is the experiment; that --max-length auto chose it is only shown in the report
        "max_length_requested": grid.data.max_length,
        "sha256": prepared.data_sha256,
        # the dev or test file's bytes are as much the experiment as --data's (None: held out of --data)
        "given_sha256": prepared.given_sha256,
    }
    config = RunConfig(
        model=grid.model,
        model_identity=prepared.model_identity,
        method=name,
        method_hyperparameters=method.hyperparameters,
        peft_config_class=method.peft_config_class,
        lr=rates.get(name, grid.train.lr if grid.train.lr is not None else method.recommended_lr),
        preset=grid.preset,
        data=data,
        train=as_dict(train),
        dry_run=grid.dry_run,
        select_only=grid.select_only,
    )
    return PlannedRun(method, train, config, fingerprint(config), run_id(name, seed))


def shard(grid: GridConfig, planned: list[PlannedRun]) -> list[PlannedRun]:
    """--shard I/N: every N-th run of the plan from the I-th on, so each shard gets a mix of methods and seeds
    and the parts are the same in every job that plans the same grid."""
    if grid.scale.shard is None:
        return planned
    return planned[grid.scale.shard.index - 1 :: grid.scale.shard.count]


def todo(grid: GridConfig, planned: list[PlannedRun], store: ResultStore) -> list[PlannedRun]:
    """The runs still to do; a finished run of other settings under the same name stops the grid."""
    left = []
    for run in planned:
        done = store.finished(run.run_id)
        if done is None:
            left.append(run)
        else:
            refuse_other_settings(grid, run, done, store)
    return left


def refuse_other_settings(grid: GridConfig, run: PlannedRun, done: RunRecord, store: ResultStore) -> None:
    """A finished run of this name must be of this run's experiment: else the folder holds another grid."""
    differences = [] if grid.dry_run else protocol_differences(done, run.config, type(grid.train))
    if differences:
        raise UserError(
            f"{store.path_of(run.run_id)} holds a finished run of different settings ({'; '.join(differences[:3])}); "
            "use another --out, or delete that file to run it again"
        )


def data_line(prepared: Prepared, grid: GridConfig) -> str:
    """What the runs train and are judged on, said before the first run: sizes, what was cut, which length."""
    parts, data = prepared.parts, grid.data
    if parts.test:
        judged = f", dev {len(parts.eval.texts)}, test {len(parts.test.texts)}"
    else:
        judged = f", eval {len(parts.eval.texts)}"
    cut = []
    if data.max_train_samples is not None:
        cut.append(f"training cut to the first {data.max_train_samples}")
    if data.max_eval_samples is not None:
        cut.append(f"evaluation splits to the first {data.max_eval_samples} each")
    cut += [f"{name} set from {path}" for name, path in (("dev", data.dev_data), ("test", data.test_data)) if path]
    shown = f" ({'; '.join(cut)})" if cut else ""
    train = f"train {len(parts.train.texts)}{judged} examples{shown}"
    return f"data: {parts.train.source}, {train}; max_length {prepared.max_length}"

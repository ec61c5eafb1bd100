"""The one training and evaluation loop every method shares. It knows nothing about methods: whatever
makes a method special was applied to the model before it arrives here (methods/)."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from peftbench.config.sections import TrainConfig, steps_per_epoch
from peftbench.hardware import resolve_dropout_masks, resolve_precision, resolve_split_by_length
from peftbench.models.classifier import is_norm
from peftbench.records import COLLAPSE_SHARE, Status, better_on_dev
from peftbench.run.dropout import bulk_masks
from peftbench.run.measure import now, synchronize
from peftbench.run.messages import TrialOutcome

LOSS_READ_INTERVAL_S = 1.0  # each read of the loss waits for the device: at most one per second


@dataclass(kw_only=True)
class TrainOutcome(TrialOutcome):
    """What the loop did (status ok, collapsed or diverged; best_evaluation: with keep_best, the evaluation best on
    dev, see better_on_dev), and a CPU copy of the trainable weights at that epoch, which never leaves the worker."""

    best_state: dict[str, torch.Tensor] | None = None


EXAMPLE_INDEX = "example_index"  # carried through evaluation so results can be put back in file order


MEGA_BATCH = 50  # batches per group that is sorted by length (transformers' LengthGroupedSampler uses 50 too)


class ShuffledLengthGroupedBatches(torch.utils.data.Sampler):
    """Batches of similar length, with each class in its usual share, served in random order.

    Plain length grouping (transformers' LengthGroupedSampler) changed what short runs learnt, for two
    reasons. It serves each group longest-first and batches never change places, so a run sees a
    saw-tooth of lengths. And length carries the label: in ChnSentiCorp, 39% of the reviews cut at 86
    tokens are positive against 77-85% of the shorter ones, so a batch of equal lengths is a batch of
    skewed labels, and each step pulls towards one class. Here a random group of MEGA_BATCH batches is
    ordered by each example's length rank *within its class*: consecutive examples then have similar
    lengths and every batch holds the classes in the group's proportions. The batches are then shuffled."""

    def __init__(self, lengths: list[int], labels: list[int], batch_size: int, generator: torch.Generator) -> None:
        self.lengths, self.labels, self.batch_size, self.generator = lengths, labels, batch_size, generator

    def _order(self, group: list[int]) -> list[int]:
        by_class: dict[int, list[int]] = {}
        for index in group:
            by_class.setdefault(self.labels[index], []).append(index)
        rank: dict[int, float] = {}
        for members in by_class.values():
            members.sort(key=lambda i: self.lengths[i])
            rank.update({index: (position + 0.5) / len(members) for position, index in enumerate(members)})
        return sorted(group, key=lambda i: rank[i])

    def __iter__(self):
        shuffled = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        size = MEGA_BATCH * self.batch_size
        ordered = [i for start in range(0, len(shuffled), size) for i in self._order(shuffled[start : start + size])]
        batches = [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        for position in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[position]

    def __len__(self) -> int:
        return steps_per_epoch(len(self.lengths), self.batch_size)


def _dataset(examples: list[dict[str, Any]]) -> Dataset[dict[str, Any]]:
    """A list of examples is a map-style dataset (indexable, sized), which DataLoader takes as it is."""
    return cast("Dataset[dict[str, Any]]", examples)


def build_loaders(
    train: list, eval_: list, collator: Any, config: TrainConfig, pin_memory: bool = False
) -> tuple[DataLoader, DataLoader]:
    """The training loader (length-grouped or uniformly shuffled) and the evaluation loader. pin_memory: batches
    in page-locked memory, which a GPU copies from without blocking (set where the device is a GPU)."""
    train_loader: DataLoader[dict[str, Any]]
    shuffle_generator = torch.Generator().manual_seed(config.seed)
    if config.group_by_length:
        lengths, labels = [len(e["input_ids"]) for e in train], [e["labels"] for e in train]
        batches = ShuffledLengthGroupedBatches(lengths, labels, config.batch_size, shuffle_generator)
        train_loader = DataLoader(_dataset(train), batch_sampler=batches, collate_fn=collator, pin_memory=pin_memory)
    else:
        train_loader = DataLoader(
            _dataset(train),
            batch_size=config.batch_size,
            shuffle=True,
            collate_fn=collator,
            generator=shuffle_generator,
            pin_memory=pin_memory,
        )
    return train_loader, build_eval_loader(eval_, collator, config, pin_memory)


def planned_steps(examples: int, config: TrainConfig) -> int:
    """Optimiser steps of a run over `examples` training examples."""
    return steps_per_epoch(examples, config.batch_size) * config.epochs


def build_eval_loader(examples: list, collator: Any, config: TrainConfig, on_gpu: bool = False) -> DataLoader:
    """Batches of the evaluation batch size for the device (TrainConfig.eval_batch), in pinned memory on a GPU."""
    indexed = [{**example, EXAMPLE_INDEX: i} for i, example in enumerate(examples)]
    if config.eval_by_length:
        # Evaluation order does not matter (results are put back in file order): sorted, batches pad least.
        indexed.sort(key=lambda e: len(e["input_ids"]))
    return DataLoader(
        _dataset(indexed), batch_size=config.eval_batch(on_gpu), shuffle=False, collate_fn=collator, pin_memory=on_gpu
    )


def compiled(model: Any, config: TrainConfig, device: torch.device) -> Any:
    """--compile: the model through torch.compile, with CUDA graphs on a GPU (mode reduce-overhead: a batch-64
    step of a BERT-base-sized model on an H200 is ~3 ms of math, so kernel launches decide). Shapes are static:
    on a GPU batches come in few lengths (hardware.length_multiple). Without --compile, the model itself."""
    if not config.compile:
        return model
    return torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None, dynamic=False)


def build_optimizer(model: Any, config: TrainConfig, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, fused into one kernel where torch offers it for this device."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    fused_devices = ("cuda", "cpu")  # torch >= 2.4 has fused AdamW for both
    if device.type in fused_devices:
        return torch.optim.AdamW(trainable, lr=lr, weight_decay=config.weight_decay, fused=True)
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=config.weight_decay, foreach=True)


def store_frozen_weights_in(model: Any, dtype: torch.dtype) -> int:
    """Cast parameters that are not trained to `dtype`; returns how many were cast.

    Under bf16 autocast every matrix product runs in bf16 anyway, so a frozen fp32 weight is only
    converted again at every step. Normalisation layers keep fp32, as autocast computes them in fp32: every
    kind of them (models.is_norm).
    """
    cast = 0
    for module in model.modules():
        if is_norm(module):
            continue
        for parameter in module.parameters(recurse=False):
            if not parameter.requires_grad and parameter.dtype != dtype and parameter.is_floating_point():
                parameter.data = parameter.data.to(dtype)
                cast += 1
    return cast


def evaluate(
    model: Any, loader: DataLoader, accelerator: Any, progress: bool, label: str, loss_batch_size: int
) -> dict[str, Any]:
    model.eval()
    losses: list[torch.Tensor] = []
    predictions: list[torch.Tensor] = []
    references: list[torch.Tensor] = []
    indices: list[torch.Tensor] = []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"{label} eval", leave=False, disable=not progress, dynamic_ncols=True):
            labels = batch.pop("labels")
            index = batch.pop(EXAMPLE_INDEX)
            logits = model(**batch).logits.float()
            loss = F.cross_entropy(logits, labels, reduction="none")
            gathered = accelerator.gather_for_metrics((loss, logits.argmax(-1), labels, index))
            for store, value in zip((losses, predictions, references, indices), gathered):
                store.append(value)
    order = torch.cat(indices).cpu().argsort()
    loss = torch.cat(losses).cpu()[order]
    predicted = torch.cat(predictions).cpu()[order].numpy()
    reference = torch.cat(references).cpu()[order].numpy()
    counts = torch.bincount(torch.from_numpy(predicted))
    return {
        "eval_loss": loss.mean().item(),
        # the reference printed the sum of per-batch mean losses over batches of its batch size, in file order
        "eval_loss_sum": sum(chunk.mean().item() for chunk in loss.split(loss_batch_size)),
        "accuracy": float(accuracy_score(reference, predicted)),
        "f1_macro": float(f1_score(reference, predicted, average="macro")),
        "top_predicted_class_share": counts.max().item() / len(predicted),
        "predictions": predicted.tolist(),  # in file order; callers keep only the ones they report
    }


MIN_PART_ROWS = 8  # a part of a batch with fewer examples computes too few rows at once to pay for its pass
MIN_SAVING = 0.05  # a batch is split only where that saves this share of its computed tokens or more


def split_by_length(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch as two parts of similar lengths, where that saves padding: its examples sorted by real length
    and cut where the fewest tokens are computed (each part padded to its own longest). Length-grouped batches
    that keep each class's share hold two length clusters when the classes' lengths differ (ChnSentiCorp's
    negative reviews are longer): one pass pads the shorter cluster to the longer, ~10% of the tokens."""
    lengths = batch["attention_mask"].sum(-1)
    order = torch.argsort(lengths, stable=True)
    ascending = lengths[order].tolist()
    rows, longest = len(ascending), ascending[-1]
    best, cut = (1 - MIN_SAVING) * rows * longest, None
    for at in range(MIN_PART_ROWS, rows - MIN_PART_ROWS + 1):
        cost = at * ascending[at - 1] + (rows - at) * longest
        if cost < best:
            best, cut = cost, at
    if cut is None:
        return [batch]
    return [_rows_of(batch, order[:cut]), _rows_of(batch, order[cut:])]


def _rows_of(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """Some rows of a batch, less the padding columns none of them needs (on either side: decoders are padded
    on the left) in every per-token tensor."""
    mask = batch["attention_mask"][rows]
    needed = mask.any(0)
    return {
        key: value[rows][:, needed] if value.shape == batch["attention_mask"].shape else value[rows]
        for key, value in batch.items()
    }


def train_step(
    model: Any,
    batch: dict[str, Any],
    optimizer: Any,
    scheduler: Any,
    accelerator: Any,
    after_step: Any = None,
    split: bool = False,
) -> torch.Tensor:
    """One optimiser step; returns the loss still on the device (reading it would wait for the device).
    after_step, if given, runs after the update while the gradients are still there. split: the batch is
    computed in parts of similar lengths (split_by_length) whose gradients add up to the whole batch's."""
    parts = split_by_length(batch) if split else [batch]
    if len(parts) == 1:
        loss = model(**batch).loss
        accelerator.backward(loss)
    else:
        loss = _backward_in_parts(model, parts, accelerator)
    optimizer.step()
    scheduler.step()
    if after_step is not None:
        after_step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _backward_in_parts(model: Any, parts: list[dict[str, Any]], accelerator: Any) -> torch.Tensor:
    """Each part's mean loss weighted by its share of the batch, so that the gradients add up to those of the
    batch's mean loss; processes synchronise gradients once, after the last part."""
    total = sum(len(part["labels"]) for part in parts)
    loss = torch.zeros((), device=accelerator.device)
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        with nullcontext() if last else accelerator.no_sync(model):
            part_loss = model(**part).loss * (len(part["labels"]) / total)
            accelerator.backward(part_loss)
        loss = loss + part_loss.detach()
    return loss


def evaluate_once(
    model: Any, examples: list, collator: Any, config: TrainConfig, accelerator: Any, progress: bool, label: str
) -> dict[str, Any]:
    """Evaluate a model on examples it was not trained or chosen on (the test split)."""
    loader = accelerator.prepare(build_eval_loader(examples, collator, config, accelerator.device.type == "cuda"))
    model = accelerator.prepare(model)
    return evaluate(model, loader, accelerator, progress, label, config.batch_size)


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model: Any, state: dict[str, torch.Tensor]) -> None:
    """Load a trainable_state back. Strict where it matters: every trainable weight must be in `state` and
    nothing else may be; the frozen weights, absent from it by design, stay as they are."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    loaded = model.load_state_dict(state, strict=False)
    missing = sorted(trainable - set(state))
    if loaded.unexpected_keys or missing:
        raise RuntimeError(
            f"saved state does not fit the model: unexpected {loaded.unexpected_keys[:3]}, missing {missing[:3]}"
        )


@dataclass
class _Clock:
    """Training time and samples, with the run's first step kept apart (allocation and lazy init)."""

    samples: int = 0
    first_step_s: float = 0.0
    first_step_samples: int = 0


@dataclass(frozen=True)
class Trial:
    """What one training run is asked, besides its model: the data, the protocol and rate, how it is shown."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]  # evaluated after every epoch: the dev split where there is one
    collator: Any
    config: TrainConfig
    lr: float
    label: str = ""  # its progress bars' name
    progress: bool = False
    # keep the trainable weights of the best epoch on eval (dev, records.better_on_dev), so that a caller
    # choosing on a dev set can evaluate exactly that state once on the test set
    keep_best: bool = False
    # the method's own per-step hook (methods.Method.after_step), called with the unwrapped model and the step
    after_step: Callable[[Any, int], None] | None = None
    # called with each evaluation (its metrics, epoch and step); True stops the trial there (run.search)
    after_evaluation: Callable[[dict[str, Any]], bool] | None = None


def train_and_evaluate(model: Any, trial: Trial, accelerator: Any) -> TrainOutcome:
    """Train for config.epochs epochs with AdamW and a linear warm-up/decay schedule, evaluating after each."""
    return _Training(model, trial, accelerator).run()


class _LossReader:
    """The running training loss, read from the device at most once per LOSS_READ_INTERVAL_S (a read waits for
    the device to finish the queued steps) and at the first step."""

    def __init__(self, device: torch.device) -> None:
        self.running = torch.zeros((), device=device)
        self.running_steps, self.total, self.steps = 0, 0.0, 0
        self.last_read = now()

    def add(self, loss: torch.Tensor, first_step: bool) -> float | None:
        """Count one step's loss; the mean since the last read when it is time to read, else None."""
        self.running += loss
        self.running_steps += 1
        if not first_step and now() - self.last_read < LOSS_READ_INTERVAL_S:
            return None
        self.last_read = now()
        return self._read()

    def _read(self) -> float:
        value = self.running.item()
        mean = value / self.running_steps
        self.total, self.steps = self.total + value, self.steps + self.running_steps
        self.running.zero_()
        self.running_steps = 0
        return mean

    def epoch_mean(self) -> float:
        if self.running_steps:
            self._read()
        return self.total / max(self.steps, 1)


class _Training:
    """One trial's loop and its state: set up once (loaders, optimizer, schedule, accelerate), then an epoch of
    training and one evaluation at a time."""

    def __init__(self, model: Any, trial: Trial, accelerator: Any) -> None:
        config = trial.config
        on_gpu = accelerator.device.type == "cuda"
        train_loader, eval_loader = build_loaders(trial.train, trial.eval, trial.collator, config, on_gpu)
        optimizer = build_optimizer(model, config, trial.lr, accelerator.device)
        total_steps = planned_steps(len(trial.train), config)
        # ceil, as transformers' Trainer rounds warmup_ratio * steps
        warmup = math.ceil(config.warmup_ratio * total_steps)
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
        prepared = accelerator.prepare(model, optimizer, train_loader, eval_loader, scheduler)
        self.model, self.optimizer, self.train_loader, self.eval_loader, self.scheduler = prepared
        self.forward_model = compiled(self.model, config, accelerator.device)  # the same parameters
        self.trial, self.config, self.accelerator = trial, config, accelerator
        precision = resolve_precision(config.precision, accelerator.device)  # as the worker resolved it
        self.bulk_masks = resolve_dropout_masks(config.dropout_masks, accelerator.device, precision) == "bulk"
        self.split = resolve_split_by_length(config.split_by_length, accelerator.device) == "on"
        self.outcome, self.clock = TrainOutcome(status=Status.OK), _Clock()

    def run(self) -> TrainOutcome:
        outcome = self.outcome
        for epoch in range(1, self.config.epochs + 1):
            train_loss = self._train_epoch(epoch)
            if not math.isfinite(train_loss):
                outcome.status, outcome.note = Status.DIVERGED, f"non-finite training loss in epoch {epoch}"
                break
            if not self._evaluated_at_this_step():  # --eval-every may have just evaluated the epoch's last step
                self._evaluate(epoch, train_loss)
            if self._stop_reason(epoch):
                break
        _speeds(outcome, self.clock)
        note = collapse_note(outcome.epochs[-1]["top_predicted_class_share"], "evaluation") if outcome.epochs else None
        if outcome.status == Status.OK and note:
            outcome.status, outcome.note = Status.COLLAPSED, note
        self.accelerator.free_memory()
        return outcome

    def _train_epoch(self, epoch: int) -> float:
        """One pass over the training data; returns the epoch's mean training loss (NaN stops it early)."""
        device = self.accelerator.device
        self.model.train()
        step_losses: list[torch.Tensor] = []  # kept on the device, read once at the end of the epoch
        step_rates: list[float] = []
        label = f"{self.trial.label} epoch {epoch}/{self.config.epochs}"
        bar = tqdm(self.train_loader, desc=label, leave=False, disable=not self.trial.progress, dynamic_ncols=True)
        synchronize(device)
        started = now()
        losses = _LossReader(device)
        for batch in bar:
            step_rates.append(self.scheduler.get_last_lr()[0])  # the rate this step uses
            step_losses.append(self._step(batch))
            self._count(batch, started)
            mean_loss = losses.add(step_losses[-1], first_step=self.outcome.train_steps == 1)
            if mean_loss is not None:
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                if not math.isfinite(mean_loss) and self.accelerator.num_processes == 1:
                    break  # (several processes must stop together: they check at the end of the epoch)
            if self._evaluation_due():
                started = self._evaluate_within(epoch, losses, started)
                if self._stop_reason(epoch):
                    break
        synchronize(device)
        self.outcome.train_time_s += now() - started
        bar.close()
        self._log_steps(step_losses, step_rates)
        mean = torch.tensor(losses.epoch_mean(), device=device)
        # every process then takes the same decisions (diverged or not) on the mean over all of them
        return self.accelerator.reduce(mean, "mean").item() if self.accelerator.num_processes > 1 else mean.item()

    def _step(self, batch: dict[str, Any]) -> torch.Tensor:
        hook = None
        if self.trial.after_step is not None:  # bound now: the step it follows, with the model the method expects
            model = self.accelerator.unwrap_model(self.model)
            hook = partial(self.trial.after_step, model, self.outcome.train_steps + 1)
        with bulk_masks(self.bulk_masks):
            return train_step(
                self.forward_model, batch, self.optimizer, self.scheduler, self.accelerator, hook, self.split
            )

    def _count(self, batch: dict[str, Any], started: float) -> None:
        self.outcome.train_steps += 1
        # each process holds its share of a batch
        self.clock.samples += len(batch["labels"]) * self.accelerator.num_processes
        if self.outcome.train_steps == 1:
            synchronize(self.accelerator.device)
            self.clock.first_step_s, self.clock.first_step_samples = now() - started, self.clock.samples

    def _log_steps(self, step_losses: list[torch.Tensor], step_rates: list[float]) -> None:
        """[step, loss, lr] of every step of the epoch, read from the device at once."""
        first = self.outcome.train_steps - len(step_losses) + 1
        losses = torch.stack(step_losses).float().tolist() if step_losses else []
        self.outcome.steps += [[first + i, loss, rate] for i, (loss, rate) in enumerate(zip(losses, step_rates))]

    def _evaluation_due(self) -> bool:
        """--eval-every: an evaluation within the epoch after every N steps."""
        every = self.config.eval_every
        return every is not None and self.outcome.train_steps % every == 0

    def _evaluated_at_this_step(self) -> bool:
        epochs = self.outcome.epochs
        return bool(epochs) and epochs[-1]["step"] == self.outcome.train_steps

    def _evaluate_within(self, epoch: int, losses: _LossReader, started: float) -> float:
        """An evaluation between two steps of an epoch; its time is not training time. Returns the clock's new
        start for the rest of the epoch's training."""
        synchronize(self.accelerator.device)
        self.outcome.train_time_s += now() - started
        self._evaluate(epoch, losses.epoch_mean())  # the training loss so far in this epoch
        self.model.train()
        synchronize(self.accelerator.device)
        return now()

    def _stop_reason(self, epoch: int) -> str | None:
        """Why the trial ends before its last epoch, if it does: a diverged evaluation (status and note set), the
        search stopping it (run.search), or --patience (stopped_early set)."""
        outcome, patience = self.outcome, self.config.patience
        last = outcome.epochs[-1] if outcome.epochs else None
        if last is not None and not math.isfinite(last["eval_loss"]):
            outcome.status = Status.DIVERGED
            outcome.note = f"non-finite evaluation loss in epoch {epoch}, step {last['step']}"
            return outcome.note
        if outcome.pruned_at_step is not None:
            return f"stopped by the search after step {outcome.pruned_at_step}"
        if patience is None or not self.trial.keep_best or outcome.best_evaluation is None:
            return None
        since_best = len(outcome.epochs) - outcome.best_evaluation
        if since_best < patience:
            return None
        outcome.stopped_early = (
            f"stopped early in epoch {epoch}, step {last['step'] if last else 0}: {since_best} evaluations in a "
            f"row not better on dev (--patience {patience})"
        )
        return outcome.stopped_early

    def _evaluate(self, epoch: int, train_loss: float) -> dict[str, Any]:
        outcome, started = self.outcome, now()
        metrics = evaluate(
            self.forward_model,
            self.eval_loader,
            self.accelerator,
            self.trial.progress,
            self.trial.label,
            self.config.batch_size,
        )
        outcome.eval_time_s += now() - started
        outcome.eval_batches += len(self.eval_loader)
        outcome.predictions = metrics.pop("predictions")
        outcome.epochs.append({"epoch": epoch, "step": outcome.train_steps, "train_loss": train_loss, **metrics})
        if self.trial.keep_best and math.isfinite(metrics["eval_loss"]) and better_on_dev(metrics, outcome.best()):
            outcome.best_evaluation = len(outcome.epochs)
            outcome.best_state = trainable_state(self.accelerator.unwrap_model(self.model))
        judge = self.trial.after_evaluation
        if judge is not None and math.isfinite(metrics["eval_loss"]) and judge(outcome.epochs[-1]):
            outcome.pruned_at_step = outcome.train_steps
        return metrics


def _speeds(outcome: TrainOutcome, clock: _Clock) -> None:
    steady_steps = outcome.train_steps - 1
    steady_time = outcome.train_time_s - clock.first_step_s
    if steady_steps > 0 and steady_time > 0:
        outcome.train_it_per_s = steady_steps / steady_time
        outcome.train_samples_per_s = (clock.samples - clock.first_step_samples) / steady_time
    elif outcome.train_time_s > 0:  # a one-step run: nothing steady to measure, report what there is
        outcome.train_it_per_s = outcome.train_steps / outcome.train_time_s
        outcome.train_samples_per_s = clock.samples / outcome.train_time_s
    if outcome.eval_time_s > 0:
        outcome.eval_it_per_s = outcome.eval_batches / outcome.eval_time_s


def collapse_note(share: float, which: str) -> str | None:
    """A note when one class takes COLLAPSE_SHARE or more of the predictions: the run learnt nothing useful."""
    return f"{share:.1%} of {which} predictions are one class" if share >= COLLAPSE_SHARE else None

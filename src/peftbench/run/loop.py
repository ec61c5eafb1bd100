"""The one training and evaluation loop every method shares. It knows nothing about methods: whatever
makes a method special was applied to the model before it arrives here (methods.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from peftbench.config.sections import TrainConfig
from peftbench.run.dropout import cheaper_dropout
from peftbench.hardware import resolve_dropout_masks
from peftbench.records import better_on_dev
from peftbench.run.measure import now, synchronize
from peftbench.models.classifier import is_norm

COLLAPSE_SHARE = 0.95  # a run predicting one class for >= 95% of eval examples has learnt nothing useful
LOSS_READ_INTERVAL_S = 1.0  # each read of the loss waits for the device: at most one per second


@dataclass
class TrainOutcome:
    status: str  # "ok", "collapsed" or "diverged"
    epochs: list[dict[str, Any]] = field(default_factory=list)
    train_steps: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    eval_batches: int = 0
    train_it_per_s: float | None = None
    train_samples_per_s: float | None = None
    eval_it_per_s: float | None = None
    note: str = ""
    best_epoch: int | None = None  # with keep_best: the best epoch on eval (dev), see better_on_dev
    best_state: dict[str, torch.Tensor] | None = None  # ...and a CPU copy of the trainable weights then
    predictions: list[int] | None = None  # of the last evaluation, in file order
    # [step, training loss, learning rate] of every optimiser step (for loss curves and experiment trackers)
    steps: list[list[float]] = field(default_factory=list)


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
        return math.ceil(len(self.lengths) / self.batch_size)


def build_loaders(train: list, eval_: list, collator: Any, config: TrainConfig) -> tuple[DataLoader, DataLoader]:
    shuffle_generator = torch.Generator().manual_seed(config.seed)
    if config.group_by_length:
        lengths, labels = [len(e["input_ids"]) for e in train], [e["labels"] for e in train]
        batches = ShuffledLengthGroupedBatches(lengths, labels, config.batch_size, shuffle_generator)
        train_loader = DataLoader(train, batch_sampler=batches, collate_fn=collator)
    else:
        train_loader = DataLoader(train, batch_size=config.batch_size, shuffle=True, collate_fn=collator, generator=shuffle_generator)
    return train_loader, build_eval_loader(eval_, collator, config)


def planned_steps(examples: int, config: TrainConfig) -> int:
    """Optimiser steps of a run over `examples` training examples: the loaders keep the last partial batch."""
    return math.ceil(examples / config.batch_size) * config.epochs


def build_eval_loader(examples: list, collator: Any, config: TrainConfig) -> DataLoader:
    indexed = [{**example, EXAMPLE_INDEX: i} for i, example in enumerate(examples)]
    if config.eval_by_length:
        # Evaluation order does not matter (results are put back in file order): sorted, batches pad least.
        indexed.sort(key=lambda e: len(e["input_ids"]))
    return DataLoader(indexed, batch_size=config.eval_batch(), shuffle=False, collate_fn=collator)


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


def evaluate(model: Any, loader: DataLoader, accelerator: Any, progress: bool, label: str, loss_batch_size: int) -> dict[str, Any]:
    model.eval()
    losses, predictions, references, indices = [], [], [], []
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


def train_step(
    model: Any, batch: dict[str, Any], optimizer: Any, scheduler: Any, accelerator: Any, after_step: Any = None
) -> torch.Tensor:
    """One optimiser step; returns the loss still on the device (reading it would wait for the device).
    after_step, if given, runs after the update while the gradients are still there."""
    loss = model(**batch).loss
    accelerator.backward(loss)
    optimizer.step()
    scheduler.step()
    if after_step is not None:
        after_step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def evaluate_once(model: Any, examples: list, collator: Any, config: TrainConfig, accelerator: Any, progress: bool, label: str) -> dict[str, Any]:
    """Evaluate a model on examples it was not trained or chosen on (the test split)."""
    loader = accelerator.prepare(build_eval_loader(examples, collator, config))
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
        raise RuntimeError(f"saved state does not fit the model: unexpected {loaded.unexpected_keys[:3]}, missing {missing[:3]}")


@dataclass
class _Clock:
    """Training time and samples, with the run's first step kept apart (allocation and lazy init)."""

    samples: int = 0
    first_step_s: float = 0.0
    first_step_samples: int = 0


def _train_epoch(
    model: Any, loader: DataLoader, optimizer: Any, scheduler: Any, accelerator: Any, config: TrainConfig,
    outcome: TrainOutcome, clock: _Clock, after_step: Any, bar_label: str, progress: bool,
) -> float:  # fmt: skip
    """One pass over the training data; returns the epoch's mean training loss (NaN stops it early)."""
    device = accelerator.device
    lane_masks = resolve_dropout_masks(config.dropout_masks, device) == "lanes"
    model.train()
    running = torch.zeros((), device=device)
    running_steps, loss_sum, loss_steps = 0, 0.0, 0
    step_losses: list[torch.Tensor] = []  # kept on the device, read once at the end of the epoch
    step_rates: list[float] = []
    bar = tqdm(loader, desc=bar_label, leave=False, disable=not progress, dynamic_ncols=True)
    synchronize(device)
    started = last_read = now()
    for batch in bar:
        hook = None
        if after_step is not None:
            step_number = outcome.train_steps + 1
            hook = lambda: after_step(accelerator.unwrap_model(model), step_number)  # noqa: E731
        step_rates.append(scheduler.get_last_lr()[0])  # the rate this step uses
        with cheaper_dropout(lane_masks):
            step_losses.append(train_step(model, batch, optimizer, scheduler, accelerator, hook))
        running += step_losses[-1]
        running_steps += 1
        outcome.train_steps += 1
        clock.samples += len(batch["labels"]) * accelerator.num_processes  # each process holds its share of a batch
        if outcome.train_steps == 1:
            synchronize(device)
            clock.first_step_s, clock.first_step_samples = now() - started, clock.samples
        if outcome.train_steps == 1 or now() - last_read >= LOSS_READ_INTERVAL_S:
            last_read = now()
            mean_loss = running.item() / running_steps
            loss_sum, loss_steps = loss_sum + running.item(), loss_steps + running_steps
            running.zero_()
            running_steps = 0
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            if not math.isfinite(mean_loss) and accelerator.num_processes == 1:
                break  # (several processes must stop together: they check at the end of the epoch)
    if running_steps:
        loss_sum, loss_steps = loss_sum + running.item(), loss_steps + running_steps
    synchronize(device)
    outcome.train_time_s += now() - started
    bar.close()
    first = outcome.train_steps - len(step_losses) + 1
    losses = torch.stack(step_losses).float().tolist() if step_losses else []
    outcome.steps += [[first + i, loss, rate] for i, (loss, rate) in enumerate(zip(losses, step_rates))]
    mean = torch.tensor(loss_sum / max(loss_steps, 1), device=device)
    # every process then takes the same decisions (diverged or not) on the mean over all of them
    return accelerator.reduce(mean, "mean").item() if accelerator.num_processes > 1 else mean.item()


def _evaluate_epoch(
    model: Any, loader: DataLoader, accelerator: Any, config: TrainConfig, outcome: TrainOutcome, epoch: int,
    train_loss: float, keep_best: bool, progress: bool, label: str,
) -> dict[str, Any]:  # fmt: skip
    started = now()
    metrics = evaluate(model, loader, accelerator, progress, label, config.batch_size)
    outcome.eval_time_s += now() - started
    outcome.eval_batches += len(loader)
    outcome.predictions = metrics.pop("predictions")
    outcome.epochs.append({"epoch": epoch, "train_loss": train_loss, **metrics})
    best = outcome.epochs[outcome.best_epoch - 1] if outcome.best_epoch else None
    if keep_best and math.isfinite(metrics["eval_loss"]) and better_on_dev(metrics, best):
        outcome.best_epoch, outcome.best_state = epoch, trainable_state(accelerator.unwrap_model(model))
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


def train_and_evaluate(
    model: Any, train: list, eval_: list, collator: Any, config: TrainConfig, lr: float, accelerator: Any, progress: bool,
    label: str, keep_best: bool = False, after_step: Any = None,
) -> TrainOutcome:  # fmt: skip
    """Train for config.epochs epochs with AdamW and a linear warm-up/decay schedule, evaluating after each.

    With keep_best, the trainable weights of the best epoch on eval (dev) are kept (better_on_dev), so that
    a caller choosing on a dev set can evaluate exactly that state once on the test set. after_step(model,
    step) is the method's own per-step hook (methods.Method.after_step), called with the unwrapped model."""
    train_loader, eval_loader = build_loaders(train, eval_, collator, config)
    optimizer = build_optimizer(model, config, lr, accelerator.device)
    total_steps = planned_steps(len(train), config)
    # ceil, as transformers' Trainer rounds warmup_ratio * steps
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    outcome, clock = TrainOutcome(status="ok"), _Clock()
    for epoch in range(1, config.epochs + 1):
        bar_label = f"{label} epoch {epoch}/{config.epochs}"
        train_loss = _train_epoch(model, train_loader, optimizer, scheduler, accelerator, config, outcome, clock, after_step, bar_label, progress)
        if not math.isfinite(train_loss):
            outcome.status, outcome.note = "diverged", f"non-finite training loss in epoch {epoch}"
            break
        metrics = _evaluate_epoch(model, eval_loader, accelerator, config, outcome, epoch, train_loss, keep_best, progress, label)
        if not math.isfinite(metrics["eval_loss"]):
            outcome.status, outcome.note = "diverged", f"non-finite evaluation loss after epoch {epoch}"
            break
    _speeds(outcome, clock)
    note = collapse_note(outcome.epochs[-1]["top_predicted_class_share"], "evaluation") if outcome.epochs else None
    if outcome.status == "ok" and note:
        outcome.status, outcome.note = "collapsed", note
    accelerator.free_memory()
    return outcome

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

from .config import TrainConfig
from .measure import now, synchronize

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


def build_loaders(train: list, eval_: list, collator: Any, config: TrainConfig) -> tuple[DataLoader, DataLoader]:
    shuffle_generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(train, batch_size=config.batch_size, shuffle=True, collate_fn=collator, generator=shuffle_generator)
    eval_loader = DataLoader(eval_, batch_size=config.eval_batch_size or config.batch_size, shuffle=False, collate_fn=collator)
    return train_loader, eval_loader


def evaluate(model: Any, loader: DataLoader, accelerator: Any, progress: bool, label: str) -> dict[str, Any]:
    model.eval()
    losses, predictions, references = [], [], []
    batch_mean_losses = []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"{label} eval", leave=False, disable=not progress, dynamic_ncols=True):
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            loss = F.cross_entropy(logits, labels, reduction="none")
            loss, predicted, labels = accelerator.gather_for_metrics((loss, logits.argmax(-1), labels))
            batch_mean_losses.append(loss.mean())
            losses.append(loss)
            predictions.append(predicted)
            references.append(labels)
    loss = torch.cat(losses).cpu()
    predicted = torch.cat(predictions).cpu().numpy()
    reference = torch.cat(references).cpu().numpy()
    counts = torch.bincount(torch.from_numpy(predicted))
    return {
        "eval_loss": loss.mean().item(),
        "eval_loss_sum": torch.stack(batch_mean_losses).sum().item(),
        "accuracy": float(accuracy_score(reference, predicted)),
        "f1_macro": float(f1_score(reference, predicted, average="macro")),
        "top_predicted_class_share": counts.max().item() / len(predicted),
    }


def train_and_evaluate(
    model: Any, train: list, eval_: list, collator: Any, config: TrainConfig, lr: float, accelerator: Any, progress: bool, label: str
) -> TrainOutcome:
    """Train for config.epochs epochs with AdamW and a linear warm-up/decay schedule, evaluating after each."""
    train_loader, eval_loader = build_loaders(train, eval_, collator, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=config.weight_decay)
    total_steps = len(train_loader) * config.epochs
    # ceil, as transformers' Trainer rounds warmup_ratio * steps
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    device = accelerator.device
    outcome = TrainOutcome(status="ok")
    first_step_s = 0.0
    first_step_samples = 0
    samples = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        running = torch.zeros((), device=device)
        running_steps = 0
        epoch_loss_sum, epoch_steps = 0.0, 0
        bar = tqdm(train_loader, desc=f"{label} epoch {epoch}/{config.epochs}", leave=False, disable=not progress, dynamic_ncols=True)
        synchronize(device)
        started = last_read = now()
        for batch in bar:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.detach()
            running_steps += 1
            outcome.train_steps += 1
            samples += len(batch["labels"])
            if outcome.train_steps == 1:
                synchronize(device)
                first_step_s, first_step_samples = now() - started, samples
            if outcome.train_steps == 1 or now() - last_read >= LOSS_READ_INTERVAL_S:
                last_read = now()
                mean_loss = running.item() / running_steps
                epoch_loss_sum, epoch_steps = epoch_loss_sum + running.item(), epoch_steps + running_steps
                running.zero_()
                running_steps = 0
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                if not math.isfinite(mean_loss):
                    break
        if running_steps:
            epoch_loss_sum, epoch_steps = epoch_loss_sum + running.item(), epoch_steps + running_steps
        synchronize(device)
        outcome.train_time_s += now() - started
        bar.close()
        train_loss = epoch_loss_sum / max(epoch_steps, 1)
        if not math.isfinite(train_loss):
            outcome.status = "diverged"
            outcome.note = f"non-finite training loss in epoch {epoch}"
            break
        eval_started = now()
        metrics = evaluate(model, eval_loader, accelerator, progress, label)
        outcome.eval_time_s += now() - eval_started
        outcome.eval_batches += len(eval_loader)
        outcome.epochs.append({"epoch": epoch, "train_loss": train_loss, **metrics})
        if not math.isfinite(metrics["eval_loss"]):
            outcome.status = "diverged"
            outcome.note = f"non-finite evaluation loss after epoch {epoch}"
            break
    steady_steps = outcome.train_steps - 1
    steady_time = outcome.train_time_s - first_step_s
    if steady_steps > 0 and steady_time > 0:
        outcome.train_it_per_s = steady_steps / steady_time
        outcome.train_samples_per_s = (samples - first_step_samples) / steady_time
    elif outcome.train_time_s > 0:  # a one-step run: nothing steady to measure, report what there is
        outcome.train_it_per_s = outcome.train_steps / outcome.train_time_s
        outcome.train_samples_per_s = samples / outcome.train_time_s
    if outcome.eval_time_s > 0:
        outcome.eval_it_per_s = outcome.eval_batches / outcome.eval_time_s
    if outcome.status == "ok" and outcome.epochs and outcome.epochs[-1]["top_predicted_class_share"] >= COLLAPSE_SHARE:
        outcome.status = "collapsed"
        share = outcome.epochs[-1]["top_predicted_class_share"]
        outcome.note = f"{share:.1%} of evaluation predictions are one class"
    accelerator.free_memory()
    return outcome

"""What a trained method costs at inference, since a user picks a method to deploy it.

Measured on the chosen weights after they are saved: where peft can merge the method into the base weights
(the LoRA family, IA3, ...), merged first, as it would be deployed; where it cannot (prompt-type methods add
their virtual tokens to every input; full fine-tuning has nothing to merge), as trained. Two figures: the
median latency of one example at batch 1 (the first LATENCY_EXAMPLES of the split, each alone), and the
throughput over the first THROUGHPUT_EXAMPLES at the evaluation batch size (sorted by length as evaluation
is, where it is), under the run's precision.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from peftbench.config.sections import TrainConfig
from peftbench.run.loop import EXAMPLE_INDEX, build_eval_loader
from peftbench.run.measure import now, synchronize
from peftbench.run.messages import InferenceCost

LATENCY_EXAMPLES = 32
THROUGHPUT_EXAMPLES = 512  # the first of the split, in file order: a run's test split is often larger
WARMUP_CALLS = 2


def merged(model: Any) -> tuple[Any, bool]:
    """The model with its adapter merged into the base weights where peft can, else as it is."""
    # a peft tuner (LoraModel, IA3Model, ...) has merge_and_unload; a prompt-type method's base_model is the
    # transformer itself, and so is a plain model's (full fine-tuning, BitFit): nothing to merge
    merge = getattr(getattr(model, "base_model", None), "merge_and_unload", None)
    if merge is None:
        return model, False
    return merge(), True


def _inputs(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) for k, v in batch.items() if k not in ("labels", EXAMPLE_INDEX)}


def _timed(model: Any, batches: list[dict[str, Any]], device: torch.device) -> list[float]:
    """Seconds of each forward pass (after WARMUP_CALLS untimed ones on the first batch)."""
    times = []
    for _ in range(WARMUP_CALLS):
        model(**_inputs(batches[0], device))
    for batch in batches:
        inputs = _inputs(batch, device)
        synchronize(device)
        started = now()
        model(**inputs)
        synchronize(device)
        times.append(now() - started)
    return times


def inference_cost(model: Any, examples: list, collator: Any, config: TrainConfig, autocast: Any) -> InferenceCost:
    """Latency at batch 1 and throughput at the evaluation batch size of `model` (merged where it can be)."""
    model, was_merged = merged(model)
    model.eval()
    device = next(model.parameters()).device
    single = [collator([example]) for example in examples[:LATENCY_EXAMPLES]]
    timed = examples[:THROUGHPUT_EXAMPLES]
    on_gpu = device.type == "cuda"
    batches = list(build_eval_loader(timed, collator, config, on_gpu))
    with torch.inference_mode(), autocast():
        latency = statistics.median(_timed(model, single, device))
        throughput = len(timed) / sum(_timed(model, batches, device))
    return InferenceCost(
        inference_ms_per_example=1000 * latency,
        inference_samples_per_s=throughput,
        inference_batch_size=config.eval_batch(on_gpu),
        inference_merged=was_merged,
    )

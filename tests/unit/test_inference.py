"""What a method costs at inference: merged into the base weights where peft can merge it, as trained where it
cannot, and the merged model predicts what the trained one did."""

from contextlib import nullcontext

import pytest
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding

from peftbench.config.sections import TrainConfig
from peftbench.methods import REGISTRY
from peftbench.models.classifier import load_classifier
from peftbench.run.inference import LATENCY_EXAMPLES, inference_cost, merged


def _examples(tokenizer, count: int) -> list[dict]:
    texts = [f"review number {i} " * (1 + i % 5) for i in range(count)]
    return [{**tokenizer(t, truncation=True, max_length=32), "labels": i % 2} for i, t in enumerate(texts)]


MERGES = [("lora", True), ("ia3", True), ("prompt-tuning", False), ("full", False)]


@pytest.mark.parametrize(("method", "merges"), MERGES)
def test_methods_peft_can_merge_are_merged_and_predict_the_same(tiny_model, method, merges):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = REGISTRY[method].build(load_classifier(str(tiny_model), 2, ["a", "b"], tokenizer.pad_token_id)).eval()
    for parameter in model.parameters():  # an adapter that changes the output, so that merging it shows
        if parameter.requires_grad:
            parameter.data.add_(0.05 * torch.randn_like(parameter))
    batch = DataCollatorWithPadding(tokenizer)(
        [{k: v for k, v in e.items() if k != "labels"} for e in _examples(tokenizer, 4)]
    )
    with torch.inference_mode():
        before = model(**batch).logits
        deployed, was_merged = merged(model)
        after = deployed(**batch).logits
    assert was_merged is merges
    assert torch.allclose(before, after, atol=1e-4)


def test_the_cost_counts_latency_at_batch_one_and_throughput_over_the_split(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = REGISTRY["lora"].build(load_classifier(str(tiny_model), 2, ["a", "b"], tokenizer.pad_token_id))
    examples = _examples(tokenizer, LATENCY_EXAMPLES + 8)
    cost = inference_cost(model, examples, DataCollatorWithPadding(tokenizer), TrainConfig(batch_size=8), nullcontext)
    assert cost.inference_merged and cost.inference_batch_size == TrainConfig(batch_size=8).eval_batch()
    assert cost.inference_ms_per_example > 0 and cost.inference_samples_per_s > 0

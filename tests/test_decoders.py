"""Decoder classifiers (Llama, Mistral, Qwen2, Qwen3, Gemma2, Phi-3, GPT-2), as tiny random models built from
configs whose tokenizers have no pad token, as real checkpoints ship."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from decoders import family_matrix, tokenized_file, two_steps
from synthetic_records import synthetic_record
from tiny_model import DECODER_CONFIGS, write_tiny_decoder

from peftbench.methods import GROUPS, REGISTRY
from peftbench.models.classifier import (
    Collator,
    configure_padding,
    is_decoder,
    load_classifier,
    load_config,
    load_tokenizer,
)
from peftbench.reporting.markdown import header_lines
from peftbench.run.loop import store_frozen_weights_in

FAMILIES = list(DECODER_CONFIGS)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    return {family: write_tiny_decoder(root / family, family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_runs_two_steps_or_fails_saying_why(family, tmp_path):
    """No method may crash a grid: each trains two steps or its worker answers with the limitation."""
    matrix = family_matrix(family, tmp_path, list(REGISTRY))
    assert list(matrix) == list(REGISTRY)
    for method in GROUPS["seed"]:  # the reference's five work on every family, prefix tuning included
        assert matrix[method] == "ran (2 steps)", (method, matrix[method])
    for method, outcome in matrix.items():
        if outcome.startswith("failed"):
            # peft's own words for a layer type it cannot adapt, or ours for a family it has no targets for
            assert "not supported" in outcome or "not available for" in outcome, (method, outcome)
        else:
            assert outcome == "ran (2 steps)", (method, outcome)


def _logits(model, collator, features):
    batch = collator(features)
    batch.pop("labels", None)
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("method", ["full", "lora", "prefix-tuning"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_padded_batch_gives_the_logits_of_each_example_alone(decoders, family, method):
    folder = str(decoders[family])
    tokenizer = load_tokenizer(folder)  # no pad token in the checkpoint: eos stands in (Qwen2's class brings its own)
    config = load_config(folder)
    configure_padding(tokenizer, config)
    assert is_decoder(config) and tokenizer.padding_side == "left"
    assert tokenizer.pad_token == ("<|endoftext|>" if family == "qwen2" else tokenizer.eos_token)
    torch.manual_seed(0)
    model = load_classifier(folder, 2, ["neg", "pos"], tokenizer.pad_token_id, "eager")
    assert model.config.pad_token_id == tokenizer.pad_token_id  # so the classifier finds the last real token
    model = REGISTRY[method].build(model).eval()
    collator = Collator(tokenizer, decoder=True)
    texts = ["房间很干净，服务也好，下次还来", "差", "早餐一般"]
    features = [dict(tokenizer(text)) for text in texts]
    together = _logits(model, collator, features)
    alone = torch.cat([_logits(model, collator, [f]) for f in features])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_bert_family_is_an_encoder_padded_on_the_right(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    config = load_config(str(tiny_model))
    configure_padding(tokenizer, config)
    assert not is_decoder(config) and tokenizer.padding_side == "right"


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen3", "phi3", "gpt2"])
def test_norm_layers_stay_fp32_when_frozen_weights_go_to_bf16(decoders, family):
    folder = str(decoders[family])
    model = REGISTRY["lora"].build(load_classifier(folder, 2, ["neg", "pos"], 2))
    assert store_frozen_weights_in(model, torch.bfloat16) > 0
    norms = [(name, module) for name, module in model.named_modules() if "norm" in type(module).__name__.lower()]
    assert norms, "every family normalises somewhere"
    for name, module in norms:
        for parameter in module.parameters(recurse=False):
            assert parameter.dtype == torch.float32, name
    frozen = [p for n, p in model.named_parameters() if not p.requires_grad and p.dim() == 2]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)


def test_a_family_that_refuses_the_kernel_asked_for_runs_on_eager_and_says_so(tmp_path):
    """The reference execution asks for SDPA, which transformers refuses for Gemma-2: the run falls back to eager
    attention, records it and says why; a family that has SDPA keeps it."""
    used = {}
    for family in ("gemma2", "llama"):
        model = write_tiny_decoder(tmp_path / family / "model", family)
        data_file = tokenized_file(model, tmp_path / family / "data.json")
        response = two_steps(model, data_file, "lora", tmp_path / family, precision="fp32", execution="reference")
        assert not response.failed and response.resolved is not None, response.error
        used[family] = (response.resolved.attention_used, response.resolved.attention_note)
    assert used["llama"] == ("sdpa", None)
    assert used["gemma2"] == (
        "eager",
        "sdpa asked; Gemma2ForSequenceClassification does not support it, so eager was used",
    )
    record = synthetic_record("lora", 0, attention_used="eager", attention_note=used["gemma2"][1])
    assert f"attention: {used['gemma2'][1]}" in header_lines([record])

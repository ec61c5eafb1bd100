"""The fast training path (length-grouped batches, bf16 where native, lane dropout masks, large sorted
evaluation batches) must not change what is measured: same examples, same metrics, comparable loss."""

import json

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import AutoTokenizer, DataCollatorWithPadding

from peftbench.cli import main
from peftbench.config import DataConfig, TrainConfig
from peftbench.data import load_labeled_texts, split, tokenize
from peftbench.train import EXAMPLE_INDEX, build_loaders, store_frozen_weights_in

QUICK = ["--max-train-samples", "384", "--max-eval-samples", "128", "--batch-size", "32", "--max-length", "48", "--no-progress"]


@pytest.fixture(scope="module")
def examples(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    parts = split(load_labeled_texts(DataConfig()), DataConfig(max_train_samples=512, max_eval_samples=200))
    return tokenize(tokenizer, parts.train, 86), tokenize(tokenizer, parts.eval, 86), DataCollatorWithPadding(tokenizer)


def test_length_grouped_batches_cover_every_example_once_with_less_padding(examples):
    train, eval_, collator = examples
    padding = {}
    for grouped in (True, False):
        loader, _ = build_loaders(train, eval_, collator, TrainConfig(batch_size=32, group_by_length=grouped))
        batches = list(loader)
        seen = sorted(tuple(row[row != 0].tolist()) for b in batches for row in b["input_ids"])
        assert seen == sorted(tuple(e["input_ids"]) for e in train)
        padding[grouped] = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    assert padding[True] < 0.5 * padding[False], padding


def test_grouped_order_is_random_but_seeded(examples):
    train, eval_, collator = examples

    def first_batch(seed):
        loader, _ = build_loaders(train, eval_, collator, TrainConfig(batch_size=32, seed=seed))
        return next(iter(loader))["input_ids"].tolist()

    assert first_batch(1) == first_batch(1) and first_batch(1) != first_batch(2)


def test_eval_loader_keeps_each_example_and_its_index(examples):
    train, eval_, collator = examples
    _, loader = build_loaders(train, eval_, collator, TrainConfig(batch_size=16))
    indices = sorted(i for b in loader for i in b[EXAMPLE_INDEX].tolist())
    assert indices == list(range(len(eval_)))
    assert loader.batch_size == 64  # 4 × the training batch


def test_frozen_weights_go_to_bf16_and_trainable_ones_stay_fp32(tiny_model):
    from peftbench.methods import REGISTRY
    from peftbench.models import load_classifier

    model = REGISTRY["lora"].build(load_classifier(str(tiny_model), 2, ["a", "b"], 0))
    assert store_frozen_weights_in(model, torch.bfloat16) > 0
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.dtype == torch.float32, name
        elif "LayerNorm" not in name:
            assert parameter.dtype == torch.bfloat16, name


def test_fast_path_reaches_the_loss_of_the_reference_path(tiny_model, tmp_path):
    """Same protocol, both execution paths: the loss falls alike and the metrics agree closely."""
    results = {}
    for name, switches in {"fast": [], "reference": ["--precision", "fp32", "--group-by-length", "off", "--dropout-masks", "torch"]}.items():
        out = tmp_path / name
        args = ["run", "--model", str(tiny_model), "--methods", "full", "--epochs", "3", "--lr", "1e-3", "--out", str(out)]
        assert main(args + QUICK + switches) == 0
        AcceleratorState._reset_state()  # a second grid with another precision in this process
        results[name] = json.loads((out / "runs" / "full__seed123.json").read_text(encoding="utf-8"))["result"]
    fast, reference = results["fast"], results["reference"]
    assert reference["precision_used"] == "fp32" and reference["dropout_masks_used"] == "torch"
    assert fast["dropout_masks_used"] == "lanes"  # the tests run on CPUs
    for result in (fast, reference):
        assert result["epochs"][-1]["train_loss"] < result["epochs"][0]["train_loss"] - 0.02, result["epochs"]
    assert abs(fast["eval_loss"] - reference["eval_loss"]) < 0.05, (fast["eval_loss"], reference["eval_loss"])
    assert abs(fast["accuracy"] - reference["accuracy"]) < 0.06


def test_eval_loss_sum_does_not_depend_on_the_evaluation_batch(tiny_model, tmp_path):
    sums = []
    for eval_batch in ("8", "128"):
        out = tmp_path / eval_batch
        args = ["run", "--model", str(tiny_model), "--methods", "lora", "--epochs", "1", "--eval-batch-size", eval_batch, "--out", str(out)]
        assert main(args + QUICK + ["--precision", "fp32"]) == 0
        AcceleratorState._reset_state()
        sums.append(json.loads((out / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]["eval_loss_sum"])
    assert sums[0] == pytest.approx(sums[1], rel=1e-4)

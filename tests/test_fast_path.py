"""The fast execution (length-grouped batches in random order, bf16 where native, dropout masks as
--dropout-masks says, large sorted evaluation batches) must not change what is measured: same examples, same
metrics, comparable loss. Whether it changes what e5-small learns is measured over seeds by
benchmarks/bench_execution.py."""

import json

import pytest
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding

from peftbench.cli import main
from peftbench.config.sections import DataConfig, TrainConfig
from peftbench.data import load_labeled_texts, split, tokenize
from peftbench.hardware import resolve_dropout_masks, resolve_precision
from peftbench.run.loop import EXAMPLE_INDEX, build_loaders, store_frozen_weights_in

QUICK = [
    "--max-train-samples",
    "384",
    "--max-eval-samples",
    "128",
    "--batch-size",
    "32",
    "--max-length",
    "48",
    "--no-progress",
]


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


def test_grouped_batches_come_in_random_order_not_longest_first(examples):
    """transformers' sampler alone serves a mega-batch (here the whole split) longest-first; ours shuffles batches."""
    train, eval_, collator = examples
    loader, _ = build_loaders(train, eval_, collator, TrainConfig(batch_size=32, group_by_length=True))
    epochs = [[int(b["attention_mask"].sum(1).max()) for b in loader] for _ in range(2)]
    for longest in epochs:
        assert len(longest) == 16 and longest != sorted(longest, reverse=True), longest
        rises = sum(b > a for a, b in zip(longest, longest[1:]))
        assert 3 <= rises <= 12, longest  # a random order rises about half the time
    assert epochs[0] != epochs[1]


def test_grouped_batches_keep_each_class_in_its_share(examples):
    """Length carries the label in this data: batches of equal length alone would be batches of one class."""
    train, eval_, collator = examples
    overall = sum(e["labels"] for e in train) / len(train)
    spread = {}
    for grouped in (True, False):
        loader, _ = build_loaders(train, eval_, collator, TrainConfig(batch_size=32, group_by_length=grouped))
        shares = [b["labels"].float().mean().item() for b in loader if len(b["labels"]) == 32]
        spread[grouped] = max(abs(share - overall) for share in shares)
    assert spread[True] <= 2 / 32 + 1e-9, spread  # the split's share, to the rounding of a batch of 32
    assert spread[False] > spread[True], spread  # uniformly random batches vary more


def test_eval_loader_keeps_each_example_and_its_index(examples):
    train, eval_, collator = examples
    _, loader = build_loaders(train, eval_, collator, TrainConfig(batch_size=16))
    indices = sorted(i for b in loader for i in b[EXAMPLE_INDEX].tolist())
    assert indices == list(range(len(eval_)))
    assert loader.batch_size == 64  # 4 × the training batch
    _, reference = build_loaders(train, eval_, collator, TrainConfig(batch_size=16, execution="reference"))
    assert reference.batch_size == 16
    assert [i for b in reference for i in b[EXAMPLE_INDEX].tolist()] == list(range(len(eval_)))  # file order


def test_frozen_weights_go_to_bf16_and_trainable_ones_stay_fp32(tiny_model):
    from peftbench.methods import REGISTRY
    from peftbench.models.classifier import load_classifier

    model = REGISTRY["lora"].build(load_classifier(str(tiny_model), 2, ["a", "b"], 0))
    assert store_frozen_weights_in(model, torch.bfloat16) > 0
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.dtype == torch.float32, name
        elif "LayerNorm" not in name:
            assert parameter.dtype == torch.bfloat16, name


def test_fast_path_reaches_the_loss_of_the_reference_path(tiny_model, tmp_path):
    """Same protocol, both executions: the loss falls alike and the metrics agree closely."""
    results = {}
    for name in ("fast", "reference"):
        out = tmp_path / name
        args = [
            "run",
            "--model",
            str(tiny_model),
            "--methods",
            "full",
            "--epochs",
            "3",
            "--lr",
            "1e-3",
            "--out",
            str(out),
        ]
        assert main(args + QUICK + ["--execution", name, "--workers", "inline"]) == 0
        results[name] = json.loads((out / "runs" / "full__seed123.json").read_text(encoding="utf-8"))["result"]
    fast, reference = results["fast"], results["reference"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert reference["precision_used"] == "fp32" and reference["dropout_masks_used"] == "torch"
    assert fast["precision_used"] == resolve_precision("auto", device)
    assert fast["dropout_masks_used"] == resolve_dropout_masks("auto", device, fast["precision_used"])
    assert reference["split_by_length_used"] == "off"
    assert fast["split_by_length_used"] == ("off" if device.type == "cuda" else "on")
    for result in (fast, reference):
        assert result["epochs"][-1]["train_loss"] < result["epochs"][0]["train_loss"] - 0.02, result["epochs"]
    assert abs(fast["eval_loss"] - reference["eval_loss"]) < 0.05, (fast["eval_loss"], reference["eval_loss"])
    assert abs(fast["accuracy"] - reference["accuracy"]) < 0.06


def _lora_run(tiny_model, out, *options: str) -> dict:
    """One quick epoch of LoRA on the tiny model in this process, with `options`; the run record's result."""
    args = ["run", "--model", str(tiny_model), "--methods", "lora", "--epochs", "1", "--out", str(out)]
    assert main(args + QUICK + [*options, "--workers", "inline"]) == 0
    return json.loads((out / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]


def test_eval_loss_sum_does_not_depend_on_the_evaluation_batch(tiny_model, tmp_path):
    sums = []
    for eval_batch in ("8", "128"):
        result = _lora_run(tiny_model, tmp_path / eval_batch, "--eval-batch-size", eval_batch, "--precision", "fp32")
        sums.append(result["eval_loss_sum"])
    assert sums[0] == pytest.approx(sums[1], rel=1e-4)


@pytest.fixture
def bulk_calls(monkeypatch) -> dict[str, int]:
    """How many times bulk_dropout is called from here on (it still draws its masks)."""
    from peftbench.run import dropout

    calls = {"bulk": 0}
    bulk_dropout = dropout.bulk_dropout

    def counted(*args, **kwargs):
        calls["bulk"] += 1
        return bulk_dropout(*args, **kwargs)

    monkeypatch.setattr(dropout, "bulk_dropout", counted)
    return calls


def test_the_loop_draws_its_dropout_masks_as_asked(tiny_model, tmp_path, bulk_calls):
    for masks in ("torch", "bulk"):
        result = _lora_run(tiny_model, tmp_path / masks, "--dropout-masks", masks)
        assert result["dropout_masks_used"] == masks
        assert (bulk_calls["bulk"] > 0) == (masks == "bulk"), bulk_calls


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_auto_dropout_masks_in_the_loop_are_those_the_run_records(tiny_model, tmp_path, bulk_calls, precision):
    # auto: bulk where a CPU computes in fp32, torch's own in bf16 and on GPUs; the loop must draw what it records
    result = _lora_run(tiny_model, tmp_path, "--execution", "fast", "--precision", precision)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = resolve_dropout_masks("auto", device, precision)
    assert result["dropout_masks_used"] == expected and (bulk_calls["bulk"] > 0) == (expected == "bulk"), bulk_calls


def test_compile_goes_through_torch_compile_for_training_and_evaluation(tiny_model, tmp_path, monkeypatch):
    from peftbench.run import loop

    compiled = []

    def recorded(model, **options):
        compiled.append(options)
        return model  # compiling itself takes minutes on a CPU: what is checked is that the loop asks for it

    monkeypatch.setattr(loop.torch, "compile", recorded)
    for flag in ("off", "on"):
        _lora_run(tiny_model, tmp_path / flag, "--compile", flag)
        assert len(compiled) == (flag == "on")
    assert compiled == [{"mode": None, "dynamic": False}]  # on a GPU: mode reduce-overhead (CUDA graphs)


def test_batches_on_a_gpu_come_in_multiples_of_16_tokens_from_pinned_memory(examples):
    from peftbench.hardware import length_multiple
    from peftbench.models.classifier import Collator

    train, eval_, collator = examples
    assert length_multiple(torch.device("cuda")) == 16 and length_multiple(torch.device("cpu")) is None
    tokenizer = collator.tokenizer
    padded = Collator(tokenizer, False, length_multiple(torch.device("cuda")))(train[:8])
    assert padded["input_ids"].shape[1] % 16 == 0
    assert Collator(tokenizer, False)(train[:8])["input_ids"].shape[1] == max(len(e["input_ids"]) for e in train[:8])
    loaders = build_loaders(train, eval_, collator, TrainConfig(batch_size=8), pin_memory=True)
    assert all(loader.pin_memory for loader in loaders)


def test_the_loop_splits_batches_by_length_as_asked(tiny_model, tmp_path, monkeypatch):
    from peftbench.run import loop

    splits = []

    def counted(batch):
        parts = split_by_length(batch)
        splits.append(len(parts))
        return parts

    split_by_length = loop.split_by_length
    monkeypatch.setattr(loop, "split_by_length", counted)
    for choice in ("off", "on"):
        result = _lora_run(tiny_model, tmp_path / choice, "--split-by-length", choice)
        assert result["split_by_length_used"] == choice
        assert bool(splits) == (choice == "on"), splits
    assert 2 in splits  # the tiny data's batches hold reviews of far apart lengths: some were split

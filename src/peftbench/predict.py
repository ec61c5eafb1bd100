"""Using what was trained: each finished run saves its weights, and `peftbench predict` labels new texts.

DIR/<run_id>/ holds the peft adapter (adapter_model.safetensors with the trained head) or, for methods
without a peft config, the whole model; the tokenizer; and peftbench-run.json, which names the base model,
the method, the labels and the settings needed to load and run it the same way.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from peftbench.errors import UserError, first_line
from peftbench.models.saved import RUN_FILE
from peftbench.records import Status
from peftbench.store.schema import read_record


def load_trained(folder: Path) -> tuple[Any, Any, dict[str, Any]]:
    from transformers import AutoTokenizer

    from peftbench.methods import REGISTRY
    from peftbench.models import classifier as models

    meta = _run_file(folder)
    method = REGISTRY.get(meta["method"])
    if method is None:
        raise UserError(f"{folder} was trained with method {meta['method']!r}, unknown to this peftbench")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:  # tokenizer files missing or broken
        raise UserError(f"cannot load the tokenizer saved in {folder}: {first_line(exc)}") from None
    labels = meta["label_names"]
    if method.peft_config_class is None:
        model = models.load_classifier(str(folder), len(labels), labels, tokenizer.pad_token_id)
    else:
        from peft import PeftModel

        base = models.load_classifier(models.resolve(meta["base_model"]), len(labels), labels, tokenizer.pad_token_id)
        model = PeftModel.from_pretrained(base, folder)
        if method.after_wrap is not None:
            method.after_wrap(model)
    return model.eval(), tokenizer, meta


# what predict reads of peftbench-run.json, and the type each must have
RUN_FILE_FIELDS = {"method": str, "base_model": str, "label_names": list, "max_length": int}


def _run_file(folder: Path) -> dict[str, Any]:
    """The saved run's peftbench-run.json, checked; UserError in one line for anything else."""
    meta_path = folder / RUN_FILE
    if not meta_path.is_file():
        raise UserError(f"{folder} is not a saved peftbench run (no {RUN_FILE}); give DIR/<method>__seed<seed>")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"cannot read {meta_path}: {type(exc).__name__}: {first_line(exc)[:100]}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path} is not a saved run's description (a JSON {type(meta).__name__})")
    for name, kind in RUN_FILE_FIELDS.items():
        if not isinstance(meta.get(name), kind) or isinstance(meta.get(name), bool):
            raise UserError(f"{meta_path}: {name} must be a {kind.__name__}, got {meta.get(name)!r:.60}")
    return meta


def run_warning(folder: Path) -> str | None:
    """What a user should know before trusting a saved run's labels: its stored status, when it learnt nothing.
    The record lies beside the weights (DIR/runs/<run>.json for DIR/<run>); a folder moved elsewhere has none."""
    record_path = folder.parent / "runs" / f"{folder.name}.json"
    try:
        result = read_record(json.loads(record_path.read_text(encoding="utf-8"))).result
    except (OSError, ValueError):  # absent, not JSON, not a run record (SchemaError)
        return None
    if result.status == Status.COLLAPSED:
        accuracy, majority = result.accuracy, result.majority_accuracy
        figures = (
            f" (accuracy {accuracy:.3f}, majority class {majority:.3f})"
            if accuracy is not None and majority is not None
            else ""
        )
        return (
            f"{folder.name} is collapsed: it predicted one class for nearly every evaluation example{figures}; its "
            "labels say little about the text"
        )
    return None


def predict(folder: Path, texts: list[str], batch_size: int = 64) -> list[tuple[str, float]]:
    """(label, probability of that label) for each text, computed as during the run's evaluation."""
    from peftbench.models.classifier import add_positions, configure_padding, is_decoder

    model, tokenizer, meta = load_trained(folder)
    decoder = is_decoder(model.config)
    configure_padding(tokenizer, model.config)  # as in training (a run saved by an older version may not say)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    bf16 = meta.get("precision") == "bf16"
    results = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=meta["max_length"],
                padding=True,
                return_tensors="pt",
            )
            batch = add_positions(batch) if decoder else batch
            context = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
            with context:
                logits = model(**batch.to(device)).logits.float()
            probabilities = logits.softmax(-1)
            best = probabilities.argmax(-1)
            results += [(meta["label_names"][i], probabilities[row, i].item()) for row, i in enumerate(best.tolist())]
    return results


def merge(folder: Path, out: Path) -> None:
    """Fold a LoRA-type adapter into the base weights and save a standalone model."""
    model, tokenizer, meta = load_trained(folder)
    if not hasattr(model, "merge_and_unload"):
        raise UserError(f"{meta['method']} has no adapter to merge: {folder} already holds a standalone model")
    try:
        merged = model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError) as exc:
        raise UserError(f"{meta['method']} adapters cannot be merged: {exc}") from None
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)

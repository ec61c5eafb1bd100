"""Every registered method on tiny random decoders of each family: two optimiser steps through the worker
(what a grid's run does), or the error it stops with. Shared by tests/test_decoders.py and
benchmarks/decoder_matrix.py (which prints the matrix for docs/running.md)."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from tiny_model import write_tiny_decoder

from peftbench.config.sections import DataConfig, TrainConfig, as_dict
from peftbench.data import load_labeled_texts, split, tokenize_split
from peftbench.models.classifier import configure_padding, load_config, load_tokenizer
from peftbench.run.messages import TRIAL, WorkRequest, WorkResponse
from peftbench.run.worker import work, write_tokenized

EXAMPLES = 8  # with batch 4: two optimiser steps


def tokenized_file(model_folder: Path, out: Path) -> Path:
    """A few real reviews of different lengths, tokenised for this model as a grid would."""
    data = DataConfig(max_train_samples=EXAMPLES, max_eval_samples=4, max_length=48)
    tokenizer = load_tokenizer(str(model_folder))
    configure_padding(tokenizer, load_config(str(model_folder)))
    tokenized = tokenize_split(split(load_labeled_texts(data), data), tokenizer, 48)
    write_tokenized(tokenized, out)
    return out


def two_steps(
    model_folder: Path, data_file: Path, method: str, scratch: Path, precision: str = "bf16", execution: str = "fast"
) -> WorkResponse:
    """One trial of one method in this process: its response (params, outcome) or its error."""
    train = TrainConfig(epochs=1, batch_size=4, lr=1e-3, precision=precision, execution=execution)
    request = WorkRequest(
        kind=TRIAL,
        run_id=method,
        method=method,
        model_path=str(model_folder),
        base_model=str(model_folder),
        train=as_dict(train),
        lr=1e-3,
        data_file=str(data_file),
        weights_dir=str(scratch / method),
        label=method,
        device="cpu",
        finish_in_trial=True,
    )
    return work(request)


def family_matrix(family: str, folder: Path, methods: list[str], execution: str = "fast") -> dict[str, str]:
    """method -> "ran" or "failed: <reason>" for one family, under one execution (the reference's asks for SDPA)."""
    return folder_matrix(write_tiny_decoder(folder / "model", family), folder, methods, execution)


def folder_matrix(
    model: Path, folder: Path, methods: list[str], execution: str = "fast", progress: bool = False
) -> dict[str, str]:
    """method -> "ran" or "failed: <reason>" for the model in a transformers folder (a tiny family's, or a real
    model's), each method's scratch under `folder`; progress: a line on stderr as each method ends (a real model
    takes minutes a method)."""
    from accelerate.state import AcceleratorState

    folder.mkdir(parents=True, exist_ok=True)
    data_file = tokenized_file(model, folder / "data.json")
    found = {}
    # Each run ends in accelerate's free_memory, a full gc.collect: in a worker process a few ms, in a test
    # process holding every earlier test's objects 0.2 s. Frozen objects are not scanned again.
    gc.freeze()
    try:
        for method in methods:
            response = two_steps(model, data_file, method, folder, execution=execution)
            AcceleratorState._reset_state()  # each worker is a process of its own in a grid; here they share one
            found[method] = (
                f"failed: {response.error}"
                if response.failed
                else f"ran ({response.outcome.train_steps if response.outcome else 0} steps)"
            )
            if progress:
                print(f"{folder.name} ({execution}): {method}: {found[method][:100]}", file=sys.stderr, flush=True)
    finally:
        gc.unfreeze()
    return found


def as_table(matrix: dict[str, dict[str, str]]) -> str:
    """Markdown: methods as rows, families as columns; reasons of failures below the table."""
    families = list(matrix)
    methods = list(next(iter(matrix.values())))
    reasons: list[str] = []
    lines = ["| method | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for method in methods:
        cells = []
        for family in families:
            outcome = matrix[family][method]
            if outcome.startswith("ran"):
                cells.append("ran")
            else:
                reasons.append(f"- {method} on {family}: {outcome[len('failed: ') :]}")
                cells.append(f"failed ({len(reasons)})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"{i + 1}. {r[2:]}" for i, r in enumerate(reasons)])

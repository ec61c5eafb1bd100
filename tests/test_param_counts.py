"""Parameter counts of the reference's five methods on the exact hfl/chinese-roberta-wwm-ext architecture."""

import csv

import pytest
import torch
from tiny_model import write_char_tokenizer
from transformers import BertConfig, BertModel

from peftbench.cli import main

# SPEC.md's table (peft 0.2.0 counted the classifier head once, as we do).
REFERENCE = {
    "full": (102269186, 102269186),
    "prefix-tuning": (102637826, 370178),
    "prompt-tuning": (102284546, 16898),
    "p-tuning": (102498562, 230914),
    "lora": (102564098, 296450),
}


@pytest.fixture(scope="module")
def reference_architecture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roberta-wwm-ext-random")
    write_char_tokenizer(folder)
    config = BertConfig(
        vocab_size=21128,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        type_vocab_size=2,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def test_dry_run_counts_match_the_reference(reference_architecture, tmp_path):
    code = main(
        [
            "run",
            "--model",
            str(reference_architecture),
            "--methods",
            "seed",
            "--dry-run",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--workers",
            "inline",
        ]
    )
    assert code == 0
    with open(tmp_path / "results.csv", encoding="utf-8") as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    for method, (total, trainable) in REFERENCE.items():
        assert rows[method]["status"] == "dry_run"
        assert (int(rows[method]["total_params"]), int(rows[method]["trainable_params"])) == (total, trainable), method
    assert float(rows["lora"]["trainable_pct"]) == pytest.approx(0.2890, abs=5e-5)

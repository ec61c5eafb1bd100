"""Builds the tiny random BERT the tests train: 2 layers, width 32, a character vocabulary from the real data."""

from __future__ import annotations

import collections
import json
from pathlib import Path

from peftbench.config import DataConfig
from peftbench.data import load_labeled_texts

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_char_tokenizer(folder: Path, vocab_size: int = 3000) -> None:
    texts = load_labeled_texts(DataConfig()).texts
    counts = collections.Counter(ch for text in texts for ch in text if not ch.isspace())
    chars = [ch.lower() for ch, _ in counts.most_common()]
    vocab = SPECIAL_TOKENS + list(dict.fromkeys(chars))[: vocab_size - len(SPECIAL_TOKENS)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # Loaded through from_pretrained: transformers 5's BertTokenizerFast(vocab_file=...) ignores the file.
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 128}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}


def write_tiny_bert(folder: Path, seed: int = 0, **size: int) -> Path:
    """size: BertConfig fields that replace the tiny ones (BERT_BASE: a random model of bert-base's size)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    write_char_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=160, type_vocab_size=2, **{**tiny, **size})
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder

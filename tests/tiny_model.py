"""Builds the tiny random BERT the tests train: 2 layers, width 32, a character vocabulary from the real data."""

from __future__ import annotations

import collections
import functools
import json
from pathlib import Path

from peftbench.config.sections import DataConfig
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
    tiny = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 160,
    }
    config = BertConfig(type_vocab_size=2, **{**tiny, **size})
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


# Tiny random decoders, one per family peftbench is expected to handle: configs as small as each family allows.
DECODER_CONFIGS = {
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "gemma2": ("Gemma2Config", {"head_dim": 16}),
    "phi3": ("Phi3Config", {}),
    "gpt2": ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 160}),
}
DECODER_SIZE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 64,
    "max_position_embeddings": 160,
}


@functools.lru_cache(maxsize=1)
def _character_counts() -> collections.Counter:
    texts = load_labeled_texts(DataConfig()).texts
    return collections.Counter(ch for text in texts for ch in text if not ch.isspace())


def write_char_decoder_tokenizer(folder: Path, vocab_size: int = 3000) -> None:
    """A character tokenizer the way decoder checkpoints ship theirs: bos and eos, no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    texts = load_labeled_texts(DataConfig()).texts
    counts = collections.Counter(ch for text in texts for ch in text if not ch.isspace())
    # "<|endoftext|>": the pad token transformers' Qwen2 tokenizer class sets by default; real Qwen vocabularies have it
    specials = ["<unk>", "<s>", "</s>", "<|endoftext|>"]
    vocab = {
        token: i for i, token in enumerate(specials + [ch for ch, _ in counts.most_common(vocab_size - len(specials))])
    }
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=128
    )
    fast.save_pretrained(folder)


def write_tiny_decoder(folder: Path, family: str, seed: int = 0) -> Path:
    import torch
    import transformers

    write_char_decoder_tokenizer(folder)
    class_name, extra = DECODER_CONFIGS[family]
    size = {} if family == "gpt2" else DECODER_SIZE
    config = getattr(transformers, class_name)(
        vocab_size=3000, bos_token_id=1, eos_token_id=2, pad_token_id=None, **{**size, **extra}
    )
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder

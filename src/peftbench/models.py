"""Loading a pretrained model and its tokenizer from a hub id or a local folder, set up for classification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

# Decoder-only families read the last token, so their batches are padded on the left (SPEC.md).
LEFT_PADDED_MODEL_TYPES = {"gpt2", "gpt_neo", "gpt_neox", "gptj", "opt", "bloom", "llama", "mistral", "qwen2", "gemma", "phi"}


def _load_error(name: str, exc: Exception) -> UserError:
    if Path(name).exists():
        return UserError(f"cannot load model folder {name}: {str(exc).strip().splitlines()[0]}")
    return UserError(
        f"cannot load model {name!r}: it is not a local folder and it is not in the Hugging Face cache "
        "(is the hub reachable?); download it on a connected machine and pass --model /path/to/its/folder"
    )


def resolve(name: str) -> str:
    """Hub id or folder to hand to from_pretrained; `e5-small-offline` is converted on first use."""
    from . import offline

    if name == offline.ALIAS:
        return str(offline.ensure_converted())
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


def configure_padding(tokenizer: Any, model_type_name: str) -> None:
    tokenizer.padding_side = "left" if model_type_name in LEFT_PADDED_MODEL_TYPES else "right"


def max_length_for(tokenizer: Any, requested: int | None, model_max_positions: int | None) -> int:
    """The requested length, or the tokenizer's own limit (capped by the model's positions)."""
    limits = [v for v in (tokenizer.model_max_length, model_max_positions) if v and v < 1_000_000]
    limit = min(limits) if limits else 512
    if requested is None:
        return limit
    if requested > limit:
        raise UserError(f"--max-length {requested} exceeds what the model accepts ({limit})")
    return requested


def load_classifier(name: str, num_labels: int, label_names: list[str], pad_token_id: int, attention: str | None = None) -> Any:
    """A fresh copy of the pretrained model with a newly initialised classification head."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    # "Some weights were newly initialized" is exactly what we want for a new head, and a loading bar per
    # run drowns the training bars: keep both quiet.
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name,
            num_labels=num_labels,
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            **({"attn_implementation": attention} if attention else {}),
        )
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    finally:
        hf_logging.set_verbosity(previous)
        hf_logging.enable_progress_bar()
    model.config.pad_token_id = pad_token_id
    return model

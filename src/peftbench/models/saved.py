"""What a finished run keeps: its trained weights (safetensors) and the file that says how to load and run
them again (`peftbench predict`, predict.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_FILE = "peftbench-run.json"


def save_trained(
    model: Any,
    tokenizer: Any,
    folder: Path,
    method: Any,
    base_model: str,
    label_names: list[str],
    max_length: int,
    precision: str,
) -> float:
    """Save the trained weights (safetensors) and what loading them needs; returns their size in MB."""
    folder.mkdir(parents=True, exist_ok=True)
    if method.peft_config_class is not None:
        model.save_pretrained(folder)  # peft: the adapter and the trained classifier head only
    else:
        # a plain model: frozen weights may be bf16 (BitFit), so save it whole in fp32 to stay loadable as is
        model.float().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    meta = {
        "base_model": base_model,
        "method": method.name,
        "label_names": label_names,
        "max_length": max_length,
        "precision": precision,
    }
    (folder / RUN_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    weights = [p for p in folder.glob("*.safetensors")]
    return sum(p.stat().st_size for p in weights) / 2**20

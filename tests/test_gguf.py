"""Decoders shipped as GGUF files: converted once into a transformers folder (models/gguf.py), checked on a tiny
random Llama written by the gguf package, and run as a named offline model (smollm2-135m-offline) without its
wheel: a package folder holding the tiny file stands in for it."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gguf")

from tiny_gguf import write_tiny_llama_gguf  # noqa: E402

from peftbench.cli import main  # noqa: E402
from peftbench.models import named  # noqa: E402
from peftbench.models.gguf import convert_gguf  # noqa: E402

TEXT = "the hotel was clean, 房间很干净"


def test_a_converted_gguf_gives_the_logits_of_the_model_written_into_it(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = tmp_path / "gguf" / "tiny.gguf"
    source.parent.mkdir()
    original = write_tiny_llama_gguf(source)
    folder = tmp_path / "converted"
    convert_gguf(source, folder)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(TEXT, return_tensors="pt")
    assert ids["input_ids"].shape[1] > len(TEXT)  # byte-level: every Chinese character is three bytes
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        # fp32 tensors written and read back unchanged: the same weights and the same operations, so the
        # logits agree to float32 rounding (a quantised file would agree only to its quantisation error)
        torch.testing.assert_close(converted(**ids).logits, original(**ids).logits, atol=1e-6, rtol=1e-6)


def test_a_named_gguf_decoder_is_converted_on_first_use_and_trains(monkeypatch, tmp_path):
    model = named.NAMED["smollm2-135m-offline"]
    package = tmp_path / "site-packages" / model.package
    package.mkdir(parents=True)
    write_tiny_llama_gguf(package / model.path)
    monkeypatch.setattr(named, "package_folder", lambda m: package if m is model else None)
    monkeypatch.setenv("PEFTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["run", "--model", model.name, "--methods", "lora,prompt-tuning", "--out", str(out), "--workers", "inline"]
    args += ["--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1", "--batch-size", "8"]
    assert main([*args, "--max-length", "24", "--no-progress"]) == 0
    assert (tmp_path / "cache" / model.name / "model.safetensors").is_file()
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "smollm2-135m-offline: HuggingFaceTB/SmolLM2-135M-Instruct (Llama decoder" in report
    assert "| lora |" in report and "| prompt-tuning |" in report and "failed" not in report.lower()

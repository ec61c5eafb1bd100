import hashlib
import json
import lzma
from importlib import resources

import pytest
from transformers import AutoTokenizer

from peftbench.config.sections import DataConfig
from peftbench.data import load_labeled_texts, majority_accuracy, split
from peftbench.errors import UserError

SPEC_SHA256 = "1d414b9c65caf3a836abdb4efded621968502ad3338e1a9d885ae131c86083f0"


def test_builtin_dataset_is_the_reference_file():
    folder = resources.files("peftbench") / "builtin_data"
    meta = json.loads((folder / "chnsenticorp_htl_all.json").read_text(encoding="utf-8"))
    raw = lzma.decompress((folder / meta["file"]).read_bytes())
    assert hashlib.sha256(raw).hexdigest() == SPEC_SHA256 == meta["sha256_uncompressed"]
    data = load_labeled_texts(DataConfig())
    assert data.rows_read == 7766 and data.rows_dropped_empty == 1 and len(data.texts) == 7765
    assert data.labels.count(1) == 5322 and data.labels.count(0) == 2443  # the dropped empty review was negative


def test_seed_split_is_datasets_own_split(tmp_path):
    from datasets import load_dataset

    folder = resources.files("peftbench") / "builtin_data"
    csv_path = tmp_path / "ChnSentiCorp_htl_all.csv"
    csv_path.write_bytes(lzma.decompress((folder / "chnsenticorp_htl_all.csv.xz").read_bytes()))
    # The reference's own code path: datasets' CSV loader, drop empty reviews, train_test_split.
    reference = load_dataset("csv", data_files=str(csv_path), split="train", cache_dir=str(tmp_path / "cache"))
    reference = reference.filter(lambda row: row["review"] is not None)
    reference = reference.train_test_split(test_size=0.2, seed=123)

    ours = split(load_labeled_texts(DataConfig()), DataConfig())
    assert len(ours.train.texts) == 6212 and len(ours.eval.texts) == 1553
    assert ours.train.texts == list(reference["train"]["review"])
    assert ours.eval.texts == list(reference["test"]["review"])
    assert ours.eval.labels == list(reference["test"]["label"])
    assert majority_accuracy(ours.eval.labels) == pytest.approx(max(ours.eval.labels.count(c) for c in (0, 1)) / 1553)


def test_string_labels_are_mapped_and_jsonl_and_tsv_read(tmp_path):
    rows = [{"text": f"好{i}", "y": "pos" if i % 3 else "neg"} for i in range(30)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    data = load_labeled_texts(DataConfig(source=str(jsonl), text_column="text", label_column="y"))
    assert data.label_names == ["neg", "pos"]
    assert data.labels[:4] == [0, 1, 1, 0]

    tsv = tmp_path / "d.tsv"
    tsv.write_text("y\ttext\n" + "".join(f"{5 + i % 3}\tNA {i}\n" for i in range(12)), encoding="utf-8")
    data = load_labeled_texts(DataConfig(source=str(tsv), text_column="text", label_column="y"))
    assert data.label_names == ["5", "6", "7"] and data.labels[:3] == [0, 1, 2]
    assert data.texts[0] == "NA 0"  # "NA" is text, not a missing value


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("label,review\n", "no rows"),
        ("label,text\n1,好\n0,差\n", "column(s) review not found"),
        ("label,review\n1,好\n1,很好\n", "only one class"),
        ("label,review\n1,\n0,  \n", "empty 'review'"),
    ],
)
def test_bad_tables_are_user_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_labeled_texts(DataConfig(source=str(path)))


def test_char_tokenizer_of_the_tiny_model_knows_the_reviews(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = load_labeled_texts(DataConfig()).texts[:1000]
    ids = [i for row in tokenizer(texts)["input_ids"] for i in row]
    unk_rate = sum(i == tokenizer.unk_token_id for i in ids) / len(ids)
    assert len(tokenizer) > 2000
    assert unk_rate < 0.02, unk_rate

"""store/schema.py: the run record as types. Every run file the repository holds reads, writes back the same
record, and a file that is JSON but not a record is refused in one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from peftbench.records import Status
from peftbench.store.runs import ResultStore
from peftbench.store.schema import SCHEMA_VERSION, OtherVersion, SchemaError, read_record

ROOT = Path(__file__).resolve().parents[2]
RUN_FILES = sorted([*ROOT.glob("results/**/runs/*.json"), *ROOT.glob("tests/fixtures/**/*.json")])
VERSION_1 = ROOT / "tests" / "fixtures" / "schema1" / "lora__seed123.json"


def _raw(path: Path = VERSION_1) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_committed_run_file_reads_and_writes_back_the_same_record() -> None:
    assert len(RUN_FILES) >= 60
    for path in RUN_FILES:
        record = read_record(_raw(path))
        again = read_record(json.loads(json.dumps(record.to_dict())))
        assert again.to_dict() == record.to_dict(), path  # NaN losses included: json writes and reads NaN
        assert record.config.seed == _raw(path)["config"]["train"]["seed"], path


def test_a_version_2_file_is_written_back_with_its_keys() -> None:
    path = next(p for p in RUN_FILES if _raw(p)["schema_version"] == 2 and "trials" in _raw(p)["result"])
    raw = _raw(path)
    written = json.loads(json.dumps(read_record(raw).to_dict()))
    assert written["config"] == raw["config"] and written["provenance"] == raw["provenance"]
    assert set(written["result"]) == set(raw["result"]) and written["result"]["trials"] == raw["result"]["trials"]


def test_a_version_1_file_is_migrated_to_the_version_written_now() -> None:
    raw = _raw()
    assert raw["schema_version"] == 1 and "model_identity" not in raw["config"]
    record = read_record(raw)
    assert record.schema_version == SCHEMA_VERSION == 2
    assert record.config.model_identity is None and record.config.select_only is False  # compared by name
    assert record.status == Status.COLLAPSED and isinstance(record.result.epochs[0].accuracy, float)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("result"), "result: Field required"),
        (lambda r: r["config"]["train"].pop("seed"), "train.seed must be an integer"),
        (lambda r: r["config"]["train"].pop("epochs"), "train.epochs must be an integer"),
        (lambda r: r["result"].update(status="great"), "result.status: Input should be"),
        (lambda r: r["result"].update(epochs=[{"epoch": 1}]), "result.epochs.0.eval_loss: Field required"),
        (lambda r: r["config"].update(method=["lora"]), "config.method: Input should be a valid string"),
    ],
)
def test_json_that_is_not_a_record_is_refused_in_one_line(change, message) -> None:
    raw = copy.deepcopy(_raw())
    change(raw)
    with pytest.raises(SchemaError, match=message) as refused:
        read_record(raw)
    assert "\n" not in str(refused.value)


def test_another_version_is_left_alone_by_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(OtherVersion):
        read_record({**_raw(), "schema_version": 3})
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "lora__seed123.json").write_text(json.dumps({**_raw(), "schema_version": 3}))
    (tmp_path / "runs" / "full__seed123.json").write_text(json.dumps({**_raw(), "result": {"status": 7}}))
    (tmp_path / "runs" / "ia3__seed123.json").write_text('{"a": ' + "9" * 5000 + "}")
    assert ResultStore(tmp_path).records() == []
    assert (tmp_path / "runs" / "lora__seed123.json").exists()  # a newer peftbench's run: not ours to move
    assert sorted(p.name for p in (tmp_path / "runs" / "corrupt").iterdir()) == [
        "full__seed123.json",
        "ia3__seed123.json",
    ]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all("is unreadable" in line for line in lines)

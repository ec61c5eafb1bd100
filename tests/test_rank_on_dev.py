"""scripts/rank_on_dev.py: a search's methods ranked by dev accuracy (ties: lower dev loss), the reference's five
left out, failed runs out, the top N printed for --methods. Runs written by hand; test accuracy never enters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from synthetic_records import synthetic_record

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rank_on_dev.py"


def _write(folder: Path, method: str, dev_accuracy: float, dev_loss: float, accuracy: float, status: str = "ok"):
    record = synthetic_record(
        method,
        0,
        status=status,
        dev_accuracy=dev_accuracy,
        dev_loss=dev_loss,
        accuracy=accuracy,
        chosen_lr=0.01,
        chosen_step=98,
    )
    (folder / "runs" / f"{record.run_id}.json").write_text(json.dumps(record.to_dict()), encoding="utf-8")


def _run(folder: Path, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, str(SCRIPT), str(folder), *args], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_ranks_on_dev_accuracy_then_dev_loss_never_on_test(tmp_path):
    (tmp_path / "runs").mkdir()
    _write(tmp_path, "ia3", 0.90, 0.30, accuracy=0.70)
    _write(tmp_path, "vera", 0.90, 0.25, accuracy=0.60)  # tied on dev accuracy, lower dev loss: ahead
    _write(tmp_path, "bitfit", 0.85, 0.20, accuracy=0.99)  # best on test, behind on dev
    _write(tmp_path, "lora", 0.95, 0.10, accuracy=0.95)  # a reference method: left out by default
    lines = _run(tmp_path, "--top", "2")
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[1] for row in rows] == ["vera", "ia3", "bitfit"]
    assert rows[0] == "| 1 | vera | 0.9000 | 0.2500 | 0.01 | 98 |"
    assert lines[-1] == "vera,ia3"


def test_failed_runs_are_out_and_exclude_can_be_emptied(tmp_path):
    (tmp_path / "runs").mkdir()
    _write(tmp_path, "lora", 0.95, 0.10, accuracy=0.95)
    _write(tmp_path, "oft", 0.99, 0.01, accuracy=0.99, status="failed")
    assert _run(tmp_path, "--exclude", "")[-1] == "lora"


def test_a_folder_without_runs_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "absent")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no trained run to rank" in out.stderr
    assert out.stdout == ""

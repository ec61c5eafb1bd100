"""scripts/beside_reference.py: the reference post's accuracy beside a folder's mean, interval and chosen rate,
the reference's five first, other methods after with no reference figure. Runs written by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from synthetic_records import synthetic_record

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "beside_reference.py"
REFERENCES = (np.arange(100) % 4 == 0).astype(int)


def _record(method: str, seed: int, wrong: int, lr: float):
    predictions = REFERENCES.copy()
    predictions[:wrong] = 1 - predictions[:wrong]
    return synthetic_record(
        method,
        seed,
        config={"lr": lr},
        predictions=predictions.tolist(),
        references=REFERENCES.tolist(),
        accuracy=float(np.mean(predictions == REFERENCES)),
        majority_accuracy=0.75,
        chosen_lr=lr,
    )


def test_table_sets_reference_beside_mean_interval_and_rate(tmp_path):
    (tmp_path / "runs").mkdir()
    records = [_record("ia3", s, 2, 0.03) for s in (0, 1)] + [_record("lora", s, 10 + s, 0.003) for s in (0, 1)]
    for record in records:
        (tmp_path / "runs" / f"{record.run_id}.json").write_text(json.dumps(record.to_dict()), encoding="utf-8")
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True)
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| lora | 0.8976 | 0.8950 ± 0.0071 | [")  # a reference method first, though behind
    assert rows[0].endswith("| 2 | 0.003 |")
    assert rows[1].startswith("| ia3 | – | 0.9800 ± 0.0000 | [")
    assert "Majority class of the test split: 0.7500." in out.stdout


def test_a_folder_without_runs_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "absent")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no finished runs" in out.stderr

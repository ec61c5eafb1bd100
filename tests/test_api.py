"""The Python API: README's example runs as written (on the tiny model), grids run one after another in one
process at different precisions without any library reset, and a typo in a field is an error."""

import re
from pathlib import Path

import pytest

from peftbench import UserError, grid, load_results, run_grid

README = Path(__file__).parents[1] / "README.md"


def _readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tiny_model, tmp_path, monkeypatch, capsys):
    code = _readme_example()
    assert '"e5-small-offline"' in code and '"results/notebook"' in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace('"e5-small-offline"', repr(str(tiny_model))), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("2 run(s) trained;") and "bitfit" in printed and "lora" in printed
    table = load_results(tmp_path / "results" / "notebook")
    assert sorted(table["method"]) == ["bitfit", "lora"] and table["accuracy"].between(0, 1).all()


def test_grids_run_one_after_another_in_one_process(tiny_model, tmp_path):
    """What a notebook does: two grids, fp32 then bf16, in the same process; accelerate's process-wide state
    (whose precision cannot change) lives in the workers, never here."""
    quick = {"max_train_samples": 64, "max_eval_samples": 32, "max_length": 32}
    for precision in ("fp32", "bf16"):
        config = grid(
            str(tiny_model), ["lora"], tmp_path / precision, data=quick, train={"epochs": 1, "precision": precision}
        )
        summary = run_grid(config, progress=False)
        assert summary.ran == 1 and summary.failed == 0
        assert summary.records[0].provenance.execution["precision"] == precision


def test_an_unknown_field_or_preset_is_an_error(tiny_model, tmp_path):
    with pytest.raises(UserError, match="'epoch'"):
        grid(str(tiny_model), "lora", tmp_path, train={"epoch": 1})
    with pytest.raises(UserError, match="unknown preset"):
        grid(str(tiny_model), "lora", tmp_path, preset="fast")
    with pytest.raises(UserError, match="no peftbench runs"):
        load_results(tmp_path / "nothing")

"""Interim reports during a grid: rebuilt after a run only when the last rebuild is far enough behind, so that
a grid of short runs does not spend more time on its reports than on training."""

import types

from peftbench.runner import scheduling


def test_interim_reports_are_skipped_until_their_share_of_the_time_allows(monkeypatch):
    clock = {"now": 100.0}
    rebuilt = []

    def rebuild(store):  # a rebuild that takes 2 s
        rebuilt.append(clock["now"])
        clock["now"] += 2.0

    monkeypatch.setattr(scheduling.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(scheduling, "_refresh_reports", rebuild)
    state = types.SimpleNamespace(store=None, reports_due=0.0, reports_stale=False)
    scheduling._interim_reports(state)  # the first run: rebuilt
    assert rebuilt == [100.0] and not state.reports_stale
    assert state.reports_due == 102.0 + 2.0 * (1 / scheduling.REPORTS_SHARE - 1)  # 18 s later at 10%
    clock["now"] = 110.0
    scheduling._interim_reports(state)  # too soon: left stale, for the next run or the grid's end
    assert rebuilt == [100.0] and state.reports_stale
    clock["now"] = 120.0
    scheduling._interim_reports(state)
    assert rebuilt == [100.0, 120.0] and not state.reports_stale


def test_a_grid_stopped_after_a_skipped_refresh_leaves_reports_with_every_stored_run(tiny_model, tmp_path, monkeypatch):
    """Ctrl-C after a run whose interim refresh was skipped: the reports are rebuilt on the way out, so they
    show every run stored (the run files alone would be complete, the reports one run behind)."""
    from peftbench import cli
    from peftbench.runner.protocol import RunJob

    monkeypatch.setattr(scheduling, "REPORTS_SHARE", 1e-9)  # after the first rebuild, none until the grid ends
    trained = RunJob.__call__

    def stopped_at_the_third(job, slot, scratch=None):
        if job.run.method.name == "ia3":
            raise KeyboardInterrupt
        return trained(job, slot, scratch)

    monkeypatch.setattr(RunJob, "__call__", stopped_at_the_third)
    args = ["run", "--model", str(tiny_model), "--methods", "bitfit,lora,ia3", "--epochs", "1", "--workers", "inline"]
    quick = ["--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "16", "--no-progress"]
    assert cli.main([*args, *quick, "--out", str(tmp_path)]) == 130
    assert sorted(p.stem for p in (tmp_path / "runs").glob("*.json")) == ["bitfit__seed123", "lora__seed123"]
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| lora |" in report and "| bitfit |" in report

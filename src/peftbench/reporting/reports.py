"""Every file a results folder shows, rebuilt from its run records: results.csv (and trials.csv, classes.csv),
report.md and report.html. `peftbench run` calls it after every run, `peftbench report` and `compare` once."""

from __future__ import annotations

from pathlib import Path

from peftbench.analysis.recommend import Constraints
from peftbench.files import write_atomic
from peftbench.reporting.html import render_html
from peftbench.reporting.markdown import findings, header_lines, render_markdown
from peftbench.reporting.tables import write_classes_csv, write_csv, write_trials_csv
from peftbench.store.schema import RunRecord

NOTES_FILE = "NOTES.md"  # a hand-written note on how the results were made, kept in the report
EMPTY_PAGE = "<!DOCTYPE html><p>No runs yet.</p>"


def write_reports(root: Path, records: list[RunRecord], constraints: Constraints | None = None) -> list[str]:
    """The folder's tables and reports from these records; the paths written."""
    root.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(root, records)
    trials_path = write_trials_csv(root, records)
    classes_path = write_classes_csv(root, records)
    notes_path = root / NOTES_FILE
    notes = notes_path.read_text(encoding="utf-8") if notes_path.exists() else ""
    found = findings(records, constraints)  # the statistics take seconds: once for both reports
    report_path, html_path = root / "report.md", root / "report.html"
    write_atomic(report_path, render_markdown(records, notes, found))
    write_atomic(html_path, render_html(records, header_lines(records), found) if records else EMPTY_PAGE)
    tables = [str(p) for p in (csv_path, trials_path, classes_path) if p]
    return [*tables, str(report_path), str(html_path)]

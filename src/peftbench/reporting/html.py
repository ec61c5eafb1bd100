"""report.html: one self-contained page (no network, no CDN) with a sortable table and the plots.

Plots are matplotlib figures inlined as SVG with text kept as text, so the browser draws labels with its
own fonts (Chinese included). A few lines of inline JavaScript sort the table; nothing is fetched.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from typing import Any

from peftbench.analysis.recommend import Recommendation
from peftbench.analysis.stats import ALPHA, Analysis, run_intervals
from peftbench.records import Status
from peftbench.reporting.markdown import (
    DISAGREEMENT_NOTE,
    Findings,
    chosen_lr,
    class_table,
    comparison_interval_text,
    display_name,
    findings,
    inference_measured,
    interval_text,
    missing_class_notes,
    summary_over_seeds,
    trial_dev_scores,
    verdict_text,
)
from peftbench.reporting.per_model import COLUMNS as MODEL_COLUMNS
from peftbench.reporting.per_model import ModelCosts
from peftbench.store.schema import RunRecord

FLAG_COLOURS = {
    Status.OK: "#1b7f3b",
    Status.COLLAPSED: "#c77700",
    Status.DIVERGED: "#b00020",
    Status.FAILED: "#b00020",
    Status.DRY_RUN: "#555",
}

# (header, how to read it); headers have spaces so that they wrap and the table fits a laptop screen
TABLE_COLUMNS: list[tuple[str, Callable[[RunRecord], Any]]] = [
    ("run", lambda r: display_name(r, True)),
    ("status", lambda r: r.status),
    ("accuracy", lambda r: r.result.accuracy),
    ("95% interval", lambda r: _interval(run_intervals(r).get("accuracy_ci"))),
    ("F1 macro", lambda r: r.result.f1_macro),
    ("dev accuracy", lambda r: r.result.dev_accuracy),
    ("lr", chosen_lr),
    ("trainable params", lambda r: r.result.trainable_params),
    ("trainable %", lambda r: r.result.trainable_pct),
    ("peak memory MB", lambda r: r.result.peak_memory_mb),
    ("train time min", lambda r: r.result.train_time_min),
    ("train samples/s", lambda r: r.result.train_samples_per_s),
    ("adapter MB", lambda r: r.result.adapter_size_mb),
]
# shown where some run measured them (runs of earlier versions did not)
INFERENCE_COLUMNS: list[tuple[str, Callable[[RunRecord], Any]]] = [
    ("inference ms (batch 1)", lambda r: r.result.inference_ms_per_example),
    ("inference samples/s", lambda r: r.result.inference_samples_per_s),
]


def _plain(name: str) -> str:
    """A method or folder name as matplotlib shows it literally: an unescaped $ would start TeX math
    ("week$\\foo$" fails to render, "$x$" is drawn as math). Axis ticks keep their own math (10^-4)."""
    return name.replace("$", r"\$")


def _interval(low_high: tuple[float, float] | None) -> str | None:
    return None if low_high is None else interval_text(low_high)


SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (header, column) {
    header.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = header.dataset.order !== "asc";
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
      header.dataset.order = ascending ? "asc" : "desc";
    });
  });
});
var drawn = document.querySelectorAll("figure svg path").length > 0;
document.body.dataset.plots = String(drawn ? document.querySelectorAll("figure svg").length : 0);
document.body.dataset.ready = "1";
"""

STYLE = """
body { font-family: system-ui, "Noto Sans CJK SC", "WenQuanYi Micro Hei", sans-serif; margin: 2em; color: #222; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f0f0f0; cursor: pointer; max-width: 7em; white-space: normal; vertical-align: bottom; }
td { white-space: nowrap; }
.recommendation { background: #eef6ee; border-left: 4px solid #1b7f3b; padding: 0.5em 1em; max-width: 70em; }
.significant-no { color: #1b7f3b; }
td:first-child, th:first-child { text-align: left; }
.status-ok { color: #1b7f3b; } .status-collapsed { color: #c77700; font-weight: bold; }
.status-diverged, .status-failed { color: #b00020; font-weight: bold; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
.baseline { font-weight: bold; }
"""


def _svg(figure: Any) -> str:
    """The figure as inline SVG, the same bytes for the same runs: no date, and element ids hashed with a salt
    of the figure's own (matplotlib's default salt is random, so that a re-rendered report always differed)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    salt = "peftbench|" + "|".join(axes.get_title() or axes.get_ylabel() for axes in figure.axes)
    with plt.rc_context({"svg.hashsalt": salt}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})

    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inline SVG needs neither


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both fewer parameters and higher accuracy, by parameters."""
    front, best = [], float("-inf")
    for params, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((params, accuracy))
            best = accuracy
    return front


GROUP_STYLE = {  # how a method is drawn in the accuracy plot, by what the statistics say of it
    "best": ("#1b7f3b", "best"),
    "tied": ("#5cb85c", "tied with the best (not significantly worse)"),
    "worse": ("#1f5fa8", "significantly worse than the best"),
    "majority": ("#b00020", "not better than the majority class (some seed)"),
}
MARKERS = "osD^v<>phP*X8"


def _groups(analysis: Analysis, recommendation: Recommendation) -> dict[str, str]:
    """Each method's group for the accuracy plot."""
    best = recommendation.best.name if recommendation.best else None
    tied = {m.name for m in recommendation.tied}
    groups = {}
    for method in analysis.methods:
        if method.runs_not_better_than_majority:
            groups[method.name] = "majority"
        else:
            groups[method.name] = "best" if method.name == best else "tied" if method.name in tied else "worse"
    return groups


def _accuracy_plot(plt: Any, analysis: Analysis, recommendation: Recommendation) -> tuple[str, str]:
    """Mean accuracy with its 95% interval per method, best at the top, coloured by its verdict against the best."""
    groups = _groups(analysis, recommendation)
    methods = analysis.methods[::-1]  # barh-style: the first row is drawn at the bottom
    figure, axes = plt.subplots(figsize=(7.5, 0.9 + 0.36 * len(methods)))
    for row, method in enumerate(methods):
        colour, _ = GROUP_STYLE[groups[method.name]]
        low, high = method.accuracy_ci
        axes.errorbar(
            method.accuracy_mean,
            row,
            xerr=[[method.accuracy_mean - low], [high - method.accuracy_mean]],
            fmt="o",
            color=colour,
            capsize=3,
        )
    axes.set_yticks(range(len(methods)), [_plain(m.name) for m in methods])
    if analysis.majority_accuracy is not None:
        axes.axvline(analysis.majority_accuracy, color="#888", linestyle=":")
    handles = [
        plt.Line2D([], [], color=c, marker="o", linestyle="", label=label)
        for key, (c, label) in GROUP_STYLE.items()
        if key in groups.values()
    ]
    handles.append(plt.Line2D([], [], color="#888", linestyle=":", label="majority class"))
    axes.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.set_xlabel(
        f"{analysis.split} accuracy: mean over seeds, 95% bootstrap interval over {analysis.split} examples"
    )
    axes.set_title("Accuracy per method")
    return "Accuracy per method", _svg(figure)


def _marker_styles(names: list[str], plt: Any) -> dict[str, dict[str, Any]]:
    """A colour and marker per method, so points are named by the legend instead of labels that overlap."""
    return {name: {"color": plt.cm.tab10(i % 10), "marker": MARKERS[i % len(MARKERS)]} for i, name in enumerate(names)}


def _cost_plots(
    plt: Any, summary: Any, intervals: dict[str, tuple[float, float]], majority: float | None
) -> list[tuple[str, str]]:
    """Accuracy against trainable parameters (with the Pareto front) and against training time."""
    styles = _marker_styles(list(summary.index), plt)
    figures = []
    for x_key, x_label, log_x, title in (
        ("trainable_params", "trainable parameters (log scale)", True, "Accuracy vs trainable parameters"),
        ("train_time_min_mean", "training time per run (min)", False, "Accuracy vs training time"),
    ):
        figure, axes = plt.subplots(figsize=(7.5, 4.6))
        for method, row in summary.iterrows():
            low, high = intervals.get(method, (row.accuracy_mean, row.accuracy_mean))
            flagged = " (flagged)" if row.flagged_runs > 0 else ""
            axes.errorbar(
                row[x_key],
                row.accuracy_mean,
                yerr=[[row.accuracy_mean - low], [high - row.accuracy_mean]],
                linestyle="",
                capsize=3,
                label=_plain(method + flagged),
                **styles[method],
            )
        if x_key == "trainable_params":
            front = _pareto([(row.trainable_params, row.accuracy_mean) for _, row in summary.iterrows()])
            axes.plot([p[0] for p in front], [p[1] for p in front], "--", color="#1b7f3b", label="Pareto front")
        if majority is not None:
            axes.axhline(majority, color="#888", linestyle=":", label=f"majority class {majority:.3f}")
        if log_x:
            axes.set_xscale("log")
        axes.set_xlabel(x_label)
        axes.set_ylabel("accuracy (mean; bars: 95% interval)" if intervals else "accuracy (mean over seeds)")
        axes.set_title(title)
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        figures.append((title, _svg(figure)))
    return figures


def _memory_plot(plt: Any, finished: list[RunRecord], order: list[str]) -> tuple[str, str]:
    import pandas as pd

    peaks = (
        pd.DataFrame([{"method": display_name(r), "peak": r.result.peak_memory_mb} for r in finished])
        .dropna()
        .groupby("method")["peak"]
        .agg(["mean", "std"])
    )
    peaks = peaks.reindex([m for m in order if m in peaks.index])
    figure, axes = plt.subplots(figsize=(6.5, 0.9 + 0.32 * max(len(peaks), 3)))
    names = [_plain(name) for name in peaks.index]
    axes.barh(names, peaks["mean"], xerr=peaks["std"].fillna(0), color="#1f5fa8", capsize=3)
    axes.invert_yaxis()
    axes.set_xlabel("peak memory (MB), mean ± std over seeds")
    axes.set_title("Peak memory per method")
    return "Peak memory per method", _svg(figure)


def _lr_plot(plt: Any, finished: list[RunRecord]) -> tuple[str, str] | None:
    """Dev accuracy against learning rate per method (lr-sensitivity), from the runs that tried several rates."""
    with_trials = [r for r in finished if len(r.result.trials_tried()) > 1]
    if not with_trials:
        return None
    styles = _marker_styles(list(dict.fromkeys(display_name(r) for r in with_trials)), plt)
    figure, axes = plt.subplots(figsize=(7.5, 4.6))
    labelled = set()
    for record in with_trials:
        name = display_name(record)
        points = [(t.lr, t.best.accuracy, t.chosen) for t in trial_dev_scores(record) if t.best is not None]
        label = None if name in labelled else _plain(name)
        labelled.add(name)
        axes.plot([p[0] for p in points], [p[1] for p in points], "-", label=label, **styles[name])
        chosen = [p for p in points if p[2]]
        axes.plot(
            [p[0] for p in chosen],
            [p[1] for p in chosen],
            linestyle="",
            markersize=12,
            fillstyle="none",
            color=styles[name]["color"],
            marker="o",
        )
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("dev accuracy of the best epoch")
    axes.set_title("Learning-rate sensitivity (circled: chosen on dev)")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return "Learning-rate sensitivity", _svg(figure)


def _epoch_plot(plt: Any, with_epochs: list[RunRecord]) -> tuple[str, str]:
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {name: plt.cm.tab20(i % 20) for i, name in enumerate(dict.fromkeys(display_name(r) for r in with_epochs))}
    for record in with_epochs:
        epochs = record.result.epochs or []
        x = [e.epoch for e in epochs]
        style = "-" if record.status == Status.OK else ":"
        name = display_name(record)
        loss_axes.plot(x, [e.eval_loss for e in epochs], style, marker="o", color=colours[name], label=_plain(name))
        accuracy_axes.plot(x, [e.accuracy for e in epochs], style, marker="o", color=colours[name])
    loss_axes.set_title("Eval loss per epoch (dotted: flagged run)")
    accuracy_axes.set_title("Eval accuracy per epoch")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = loss_axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    accuracy_axes.legend(
        unique.values(), unique.keys(), fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
    return "Per-epoch curves", _svg(figure)


def _plots(
    finished: list[RunRecord],
    majority: float | None,
    analysis: Analysis | None,
    recommendation: Recommendation | None,
) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: the browser renders it, CJK included
    summary = summary_over_seeds(finished)
    figures = []
    if analysis is not None and recommendation is not None:
        figures.append(_accuracy_plot(plt, analysis, recommendation))
    if summary is not None:
        intervals = {m.name: m.accuracy_ci for m in analysis.methods} if analysis else {}
        figures += _cost_plots(plt, summary, intervals, majority)
        figures.append(_memory_plot(plt, finished, list(summary.index)))
    lr_figure = _lr_plot(plt, finished)
    if lr_figure is not None:
        figures.append(lr_figure)
    with_epochs = [r for r in finished if r.result.epochs]
    if with_epochs:
        figures.append(_epoch_plot(plt, with_epochs))
    return figures


def _cell(value: Any) -> str:
    if value is None:
        return '<td data-value="">–</td>'
    if isinstance(value, float):
        shown = f"{value:,.4f}" if abs(value) < 100 else f"{value:,.0f}"
    elif isinstance(value, int):
        shown = f"{value:,}"
    else:
        shown = str(value)
    css = f' class="status-{html.escape(shown)}"' if shown in FLAG_COLOURS else ""
    return f'<td data-value="{html.escape(str(value))}"{css}>{html.escape(shown)}</td>'


def _class_parts(finished: list[RunRecord]) -> list[str]:
    """Runs that never predicted a class of their split, and for more than two classes, recall / precision per class."""
    parts = []
    notes = missing_class_notes(finished)
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in notes) + "</ul>")
    table = class_table(finished)
    if table is not None:
        parts.append(
            f"<h2>Per class</h2><p>Recall / precision on the {html.escape(table.split)} split; 0.00 recall: a class "
            "the run never predicts.</p>"
        )
        parts.append(
            '<div class="scroll"><table><thead><tr><th>run</th>'
            + "".join(f"<th>{html.escape(label)}</th>" for label in table.labels)
            + "</tr></thead><tbody>"
        )
        for run, cells in table.rows:
            parts.append(
                f"<tr><td>{html.escape(run)}</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
            )
        parts.append("</tbody></table></div>")
    return parts


def _comparison_table(analysis: Analysis) -> list[str]:
    parts = [
        "<h2>Which differences are real</h2>",
        f"<p>Each pair of methods on the same {analysis.split} examples: difference of mean accuracy (A − B), "
        f"{html.escape(comparison_interval_text(analysis))}, and a paired permutation test, Holm-corrected over the "
        f"same {len(analysis.comparisons)} pairs (significant: corrected p &lt; {ALPHA}).</p>",
        '<div class="scroll"><table class="sortable"><thead><tr><th>A vs B</th><th>difference</th>'
        "<th>simultaneous 95% interval</th><th>p (Holm)</th><th>significant</th></tr></thead><tbody>",
    ]
    for c in analysis.comparisons:
        verdict = verdict_text(c)
        parts.append(
            f'<tr><td data-value="{html.escape(c.a)} vs {html.escape(c.b)}">{html.escape(c.a)} vs '
            f"{html.escape(c.b)}</td>"
            f'<td data-value="{c.difference}">{c.difference:+.4f}</td><td data-value="{c.ci[0]}">[{c.ci[0]:+.4f}, '
            f"{c.ci[1]:+.4f}]</td>"
            f'<td data-value="{c.p_holm}">{c.p_holm:.4f}</td><td data-value="{verdict}" '
            f'class="significant-{"yes" if c.significant else "no"}">{verdict}</td></tr>'
        )
    parts.append("</tbody></table></div>")
    if any(c.disagrees for c in analysis.comparisons):
        parts.append(f"<p>{html.escape(DISAGREEMENT_NOTE)}</p>")
    return parts


def _model_cost_parts(costs: ModelCosts | None) -> list[str]:
    if costs is None:
        return []
    head = "".join(f"<th>{html.escape(name)}</th>" for name in MODEL_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in costs.rows)
    return [
        "<h2>Cost per model</h2><p>Lowest–highest over each model's runs (its methods and seeds).</p>",
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>',
    ]


def render_html(records: list[RunRecord], header_lines: list[str], found: Findings | None = None) -> str:
    finished = [r for r in records if r.status not in (Status.FAILED, Status.DRY_RUN)]
    failed = [r for r in records if r.status == Status.FAILED]
    # the majority figure is the test set's, which a --select-only run never reads
    majorities = sorted(
        {m for r in finished if not r.config.select_only and (m := r.result.majority_accuracy) is not None}
    )
    majority = majorities[0] if len(majorities) == 1 else None
    found = findings(records) if found is None else found
    analysis, recommendation, sentences = found.analysis, found.recommendation, found.sentences
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>peftbench comparison</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>peftbench comparison</h1>",
    ]
    if sentences:
        parts.append('<div class="recommendation"><h2>Recommendation</h2><p>computed from the runs below</p><ul>')
        parts += [f"<li>{html.escape(line)}</li>" for line in sentences]
        parts.append("</ul></div>")
    parts.append("<ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in header_lines]
    parts.append("</ul>")
    if majorities:
        parts.append(
            f'<p class="baseline">Majority-class accuracy: {", ".join(f"{m:.4f}" for m in majorities)} — a method at '
            "this level learnt nothing.</p>"
        )
    parts.append("<h2>Runs</h2><p>Click a column to sort.</p>")
    columns = TABLE_COLUMNS + (INFERENCE_COLUMNS if inference_measured(records) else [])
    parts.append(
        '<div class="scroll"><table class="sortable"><thead><tr>'
        + "".join(f"<th>{name}</th>" for name, _ in columns)
        + "</tr></thead><tbody>"
    )
    for record in records:
        parts.append("<tr>" + "".join(_cell(read(record)) for _, read in columns) + "</tr>")
    parts.append("</tbody></table></div>")
    parts += _class_parts(finished)
    parts += _model_cost_parts(found.costs)
    if analysis is not None and analysis.comparisons:
        parts += _comparison_table(analysis)
    if finished:
        parts.append("<h2>Plots</h2>")
        for title, svg in _plots(finished, majority, analysis, recommendation):
            parts.append(f'<figure title="{html.escape(title)}">{svg}</figure>')
    if failed:
        parts.append("<h2>Failed runs</h2><ul>")
        parts += [f"<li>{html.escape(display_name(r, True))}: {html.escape(r.result.error or '')}</li>" for r in failed]
        parts.append("</ul>")
    parts.append(f"<script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)

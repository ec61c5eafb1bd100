"""report.html: one self-contained page (no network, no CDN) with a sortable table and the plots.

Plots are matplotlib figures inlined as SVG with text kept as text, so the browser draws labels with its
own fonts (Chinese included). A few lines of inline JavaScript sort the table; nothing is fetched.
"""

from __future__ import annotations

import html
import io
from typing import Any

from .report import display_name, summary_over_seeds

FLAG_COLOURS = {"ok": "#1b7f3b", "collapsed": "#c77700", "diverged": "#b00020", "failed": "#b00020", "dry_run": "#555"}

TABLE_COLUMNS = [
    ("run", lambda r: display_name(r, True)),
    ("status", lambda r: r["result"]["status"]),
    ("accuracy", lambda r: r["result"].get("accuracy")),
    ("f1_macro", lambda r: r["result"].get("f1_macro")),
    ("dev_accuracy", lambda r: r["result"].get("dev_accuracy")),
    ("lr", lambda r: r["result"].get("chosen_lr", r["config"]["lr"])),
    ("trainable_params", lambda r: r["result"].get("trainable_params")),
    ("trainable_pct", lambda r: r["result"].get("trainable_pct")),
    ("peak_memory_mb", lambda r: r["result"].get("peak_memory_mb")),
    ("train_time_min", lambda r: r["result"].get("train_time_min")),
    ("train_samples_per_s", lambda r: r["result"].get("train_samples_per_s")),
    ("adapter_size_mb", lambda r: r["result"].get("adapter_size_mb")),
]

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
document.body.dataset.plots = String(document.querySelectorAll("figure svg path").length > 0 ? document.querySelectorAll("figure svg").length : 0);
document.body.dataset.ready = "1";
"""

STYLE = """
body { font-family: system-ui, "Noto Sans CJK SC", "WenQuanYi Micro Hei", sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; cursor: pointer; }
td:first-child, th:first-child { text-align: left; }
.status-ok { color: #1b7f3b; } .status-collapsed { color: #c77700; font-weight: bold; }
.status-diverged, .status-failed { color: #b00020; font-weight: bold; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
.baseline { font-weight: bold; }
"""


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

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


def _plots(finished: list[dict[str, Any]], majority: float | None) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: the browser renders it, CJK included
    summary = summary_over_seeds(finished)
    figures = []
    if summary is not None:
        for x_key, x_label, log_x, title in (
            ("trainable_params", "trainable parameters (log scale)", True, "Accuracy vs trainable parameters"),
            ("train_time_min_mean", "training time per run (min)", False, "Accuracy vs training time"),
        ):
            figure, axes = plt.subplots(figsize=(6.5, 4.2))
            for method, row in summary.iterrows():
                flagged = row.flagged_runs > 0
                std = 0.0 if row.accuracy_std != row.accuracy_std else row.accuracy_std
                axes.errorbar(row[x_key], row.accuracy_mean, yerr=std, fmt="x" if flagged else "o",
                              color="#b00020" if flagged else "#1f5fa8", capsize=3)  # fmt: skip
                axes.annotate(method + (" (flagged)" if flagged else ""), (row[x_key], row.accuracy_mean),
                              fontsize=8, xytext=(4, 3), textcoords="offset points")  # fmt: skip
            if x_key == "trainable_params":
                front = _pareto([(row.trainable_params, row.accuracy_mean) for _, row in summary.iterrows()])
                axes.plot([p[0] for p in front], [p[1] for p in front], "--", color="#1b7f3b", label="Pareto front")
            if majority is not None:
                axes.axhline(majority, color="#888", linestyle=":", label=f"majority class {majority:.3f}")
            if log_x:
                axes.set_xscale("log")
            axes.set_xlabel(x_label)
            axes.set_ylabel("accuracy (mean ± std over seeds)")
            axes.set_title(title)
            axes.legend(fontsize=8, loc="lower right")
            figures.append((title, _svg(figure)))
        import pandas as pd

        peaks = pd.DataFrame(
            [{"method": display_name(r), "peak": r["result"].get("peak_memory_mb")} for r in finished]
        ).dropna().groupby("method")["peak"].agg(["mean", "std"])
        peaks = peaks.reindex([m for m in summary.index if m in peaks.index])
        figure, axes = plt.subplots(figsize=(6.5, 4.2))
        axes.barh(peaks.index, peaks["mean"], xerr=peaks["std"].fillna(0), color="#1f5fa8", capsize=3)
        axes.set_xlabel("peak memory (MB), mean ± std over seeds")
        axes.set_title("Peak memory per method")
        figures.append(("Peak memory per method", _svg(figure)))
    with_epochs = [r for r in finished if r["result"].get("epochs")]
    if with_epochs:
        figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
        colours = {name: plt.cm.tab20(i % 20) for i, name in enumerate(dict.fromkeys(display_name(r) for r in with_epochs))}
        for record in with_epochs:
            epochs = record["result"]["epochs"]
            x = [e["epoch"] for e in epochs]
            style = "-" if record["result"]["status"] == "ok" else ":"
            name = display_name(record)
            loss_axes.plot(x, [e["eval_loss"] for e in epochs], style, marker="o", color=colours[name], label=name)
            accuracy_axes.plot(x, [e["accuracy"] for e in epochs], style, marker="o", color=colours[name])
        loss_axes.set_title("Eval loss per epoch (dotted: flagged run)")
        accuracy_axes.set_title("Eval accuracy per epoch")
        for axes in (loss_axes, accuracy_axes):
            axes.set_xlabel("epoch")
            axes.xaxis.get_major_locator().set_params(integer=True)
        handles, labels = loss_axes.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        loss_axes.legend(unique.values(), unique.keys(), fontsize=7, ncol=2)
        figures.append(("Per-epoch curves", _svg(figure)))
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


def render_html(records: list[dict[str, Any]], header_lines: list[str]) -> str:
    finished = [r for r in records if r["result"]["status"] not in ("failed", "dry_run")]
    failed = [r for r in records if r["result"]["status"] == "failed"]
    majorities = sorted({r["result"].get("majority_accuracy") for r in finished} - {None})
    majority = majorities[0] if len(majorities) == 1 else None
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>peftbench comparison</title>",
             f"<style>{STYLE}</style></head><body>", "<h1>peftbench comparison</h1>", "<ul>"]  # fmt: skip
    parts += [f"<li>{html.escape(line)}</li>" for line in header_lines]
    parts.append("</ul>")
    if majorities:
        parts.append(f'<p class="baseline">Majority-class accuracy: {", ".join(f"{m:.4f}" for m in majorities)} — a method at this level learnt nothing.</p>')
    parts.append("<h2>Runs</h2><p>Click a column to sort.</p>")
    parts.append('<table class="sortable"><thead><tr>' + "".join(f"<th>{name}</th>" for name, _ in TABLE_COLUMNS) + "</tr></thead><tbody>")
    for record in records:
        parts.append("<tr>" + "".join(_cell(read(record)) for _, read in TABLE_COLUMNS) + "</tr>")
    parts.append("</tbody></table>")
    if finished:
        parts.append("<h2>Plots</h2>")
        for title, svg in _plots(finished, majority):
            parts.append(f'<figure title="{html.escape(title)}">{svg}</figure>')
    if failed:
        parts.append("<h2>Failed runs</h2><ul>")
        parts += [f"<li>{html.escape(display_name(r, True))}: {html.escape(r['result'].get('error', ''))}</li>" for r in failed]
        parts.append("</ul>")
    parts.append(f"<script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)

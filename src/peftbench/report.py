"""report.md: the comparison in the reference's layout (metrics as rows, runs as columns)."""

from __future__ import annotations

from typing import Any, Callable

from .measure import MEASUREMENT_NOTES


def _fmt(value: Any, pattern: str) -> str:
    if value is None or value == "":
        return "–"
    return format(value, pattern)


# (row label, how to read it from a run's result, format)
ROWS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("status", lambda r: r["status"], "s"),
    ("total params", lambda r: r.get("total_params"), ","),
    ("trainable params", lambda r: r.get("trainable_params"), ","),
    ("trainable %", lambda r: r.get("trainable_pct"), ".4f"),
    ("peak memory (MB)", lambda r: r.get("peak_memory_mb"), ".0f"),
    ("train speed (it/s)", lambda r: r.get("train_it_per_s"), ".2f"),
    ("eval speed (it/s)", lambda r: r.get("eval_it_per_s"), ".2f"),
    ("train samples/s", lambda r: r.get("train_samples_per_s"), ".1f"),
    ("train time (min, eval excluded)", lambda r: r.get("train_time_min"), ".4f"),
    ("total time (min, eval included)", lambda r: r.get("total_time_min"), ".4f"),
    ("eval loss (sum over batches)", lambda r: r.get("eval_loss_sum"), ".4f"),
    ("eval loss (mean)", lambda r: r.get("eval_loss"), ".4f"),
    ("accuracy", lambda r: r.get("accuracy"), ".4f"),
    ("F1 (macro)", lambda r: r.get("f1_macro"), ".4f"),
]


def _column_name(record: dict[str, Any], several_seeds: bool) -> str:
    method = record["config"]["method"]
    return f"{method} (seed {record['config']['train']['seed']})" if several_seeds else method


def render_markdown(records: list[dict[str, Any]]) -> str:
    finished = [r for r in records if r["result"]["status"] != "failed"]
    failed = [r for r in records if r["result"]["status"] == "failed"]
    lines = ["# peftbench comparison", ""]
    if not records:
        return "\n".join(lines + ["No runs yet.", ""])
    first = records[0]
    config, data = first["config"], first.get("data", {})
    train = config["train"]
    lines += [
        f"- model: `{config['model']}`",
        f"- data: `{data.get('source')}`: {data.get('train_examples')} train / {data.get('eval_examples')} eval examples, "
        f"max_length {data.get('max_length')}, classes {', '.join(map(str, data.get('label_names', [])))}",
        f"- protocol: preset `{config['preset']}`, {train['epochs']} epochs, batch {train['batch_size']}, AdamW, "
        f"linear schedule with {train['warmup_ratio']:.0%} warm-up",
        f"- execution: precision {first['result'].get('precision_used', train['precision'])} "
        f"(asked: {train['precision']}), {'length-grouped' if train.get('group_by_length') else 'uniformly random'} batches",
    ]
    majority = {r["result"].get("majority_accuracy") for r in finished} - {None}
    if majority:
        lines.append(
            f"- **majority-class accuracy of the eval set: {', '.join(f'{m:.4f}' for m in sorted(majority))}** "
            "(a method at this level learnt nothing)"
        )
    lines.append("")
    if finished:
        seeds = {r["config"]["train"]["seed"] for r in finished}
        columns = [_column_name(r, len(seeds) > 1) for r in finished]
        lines.append("| | " + " | ".join(columns) + " |")
        lines.append("|---|" + "---|" * len(columns))
        lines.append("| learning rate | " + " | ".join(_fmt(r["config"]["lr"], "g") for r in finished) + " |")
        for label, read, pattern in ROWS:
            lines.append(f"| {label} | " + " | ".join(_fmt(read(r["result"]), pattern) for r in finished) + " |")
        lines.append("")
        flagged = [r for r in finished if r["result"]["status"] not in ("ok", "dry_run")]
        for record in flagged:
            lines.append(f"- **{_column_name(record, True)} {record['result']['status']}**: {record['result'].get('note', '')}")
        if flagged:
            lines.append("")
    if failed:
        lines.append("## Failed runs")
        lines.append("")
        for record in failed:
            lines.append(f"- {_column_name(record, True)}: {record['result'].get('error', '')}")
        lines.append("")
    lines += ["## How the figures were measured", ""]
    lines += [f"- `{key}`: {text}" for key, text in MEASUREMENT_NOTES.items()]
    memory = {r["result"].get("peak_memory_method") for r in finished} - {None}
    lines += [f"- `peak_memory_mb`: {m}" for m in sorted(memory)]
    lines.append("")
    return "\n".join(lines)

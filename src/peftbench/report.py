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
    ("dev accuracy (chosen epoch)", lambda r: r.get("dev_accuracy"), ".4f"),
    ("chosen epoch", lambda r: r.get("chosen_epoch"), "d"),
    ("accuracy", lambda r: r.get("accuracy"), ".4f"),
    ("F1 (macro)", lambda r: r.get("f1_macro"), ".4f"),
]


def display_name(record: dict[str, Any], with_seed: bool = False) -> str:
    """The method, prefixed by its results folder when runs of several folders are compared."""
    name = record.get("source_label", "") + record["config"]["method"]
    return f"{name} (seed {record['config']['train']['seed']})" if with_seed else name


_column_name = display_name


def summary_over_seeds(records: list[dict[str, Any]]) -> Any:
    """One row per method over its finished seeds: accuracy mean, std, min, max and the cost beside it."""
    import pandas as pd

    rows = [
        {
            "method": display_name(r),
            "accuracy": r["result"].get("accuracy"),
            "f1_macro": r["result"].get("f1_macro"),
            "dev_accuracy": r["result"].get("dev_accuracy"),
            "chosen_lr": r["result"].get("chosen_lr", r["config"]["lr"]),
            "trainable_params": r["result"].get("trainable_params"),
            "train_time_min": r["result"].get("train_time_min"),
            "majority_accuracy": r["result"].get("majority_accuracy"),
            "flagged": r["result"]["status"] != "ok",
        }
        for r in records
        if r["result"]["status"] in ("ok", "collapsed", "diverged") and r["result"].get("accuracy") is not None
    ]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    summary = frame.groupby("method").agg(
        seeds=("accuracy", "size"),
        accuracy_mean=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"),  # sample std (n-1); NaN for one seed
        accuracy_min=("accuracy", "min"),
        accuracy_max=("accuracy", "max"),
        f1_macro_mean=("f1_macro", "mean"),
        dev_accuracy_mean=("dev_accuracy", "mean"),
        chosen_lrs=("chosen_lr", lambda v: ", ".join(f"{x:g}" for x in sorted(set(v)))),
        trainable_params=("trainable_params", "first"),
        train_time_min_mean=("train_time_min", "mean"),
        flagged_runs=("flagged", "sum"),
    )
    return summary.sort_values("accuracy_mean", ascending=False)


def _summary_lines(summary: Any) -> list[str]:
    lines = [
        "## Summary over seeds (sorted by accuracy)",
        "",
        "| method | seeds | accuracy mean ± std | min–max | F1 macro | dev accuracy | lr | trainable params | train time (min) | flagged runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in summary.iterrows():
        std = "–" if row.accuracy_std != row.accuracy_std else f"{row.accuracy_std:.4f}"  # NaN: a single seed
        dev = "–" if row.dev_accuracy_mean != row.dev_accuracy_mean else f"{row.dev_accuracy_mean:.4f}"
        lines.append(
            f"| {method} | {row.seeds} | {row.accuracy_mean:.4f} ± {std} | {row.accuracy_min:.4f}–{row.accuracy_max:.4f} | "
            f"{row.f1_macro_mean:.4f} | {dev} | {row.chosen_lrs} | {int(row.trainable_params):,} | {row.train_time_min_mean:.2f} | {row.flagged_runs} |"
        )
    return lines + [""]


def execution_name(record: dict[str, Any]) -> str:
    """How a run was executed, in a few words ("fast, bf16"); version-1 runs had no name for it."""
    train, result = record["config"]["train"], record["result"]
    name = train.get("execution") or ("fast" if train.get("group_by_length") else "custom")
    return f"{name}, {result.get('precision_used', train.get('precision'))}"


def _device_line(record: dict[str, Any]) -> str | None:
    device = record.get("provenance", {}).get("device")
    if not device:
        return None
    flags = f" ({' '.join(device['flags'])})" if device.get("flags") else ""
    auto = device.get("auto")
    resolved = f"; precision auto → {auto['precision']}: {auto['precision_why']}" if auto else ""
    return f"device: {device.get('name')}{flags}{resolved}"


def execution_lines(records: list[dict[str, Any]]) -> list[str]:
    """The execution and the device, and one line saying so when the runs of one report differ in them."""
    counts: dict[str, int] = {}
    for record in records:
        counts[execution_name(record)] = counts.get(execution_name(record), 0) + 1
    devices = sorted({line for line in map(_device_line, records) if line})
    if len(counts) == 1:
        lines = [f"execution: {next(iter(counts))}"]
    else:
        shown = "; ".join(f"{name} ×{n}" for name, n in sorted(counts.items()))
        lines = [f"executions differ between these runs ({shown}): accuracy is comparable, time and memory only within one execution"]
    if len(devices) > 1:
        lines.append(f"runs were made on {len(devices)} different devices: time and memory compare only within one")
    return lines + devices


def header_lines(records: list[dict[str, Any]]) -> list[str]:
    """What was compared and how, one sentence per line (shared by report.md and report.html)."""
    first = records[0]
    config, data = first["config"], first.get("data", {})
    train = config["train"]
    models = sorted({r["config"]["model"] for r in records})
    lines = [
        f"model: {', '.join(models)}",
        f"data: {data.get('source')}: {data.get('train_examples')} train / {data.get('eval_examples')} eval examples, "
        f"max_length {data.get('max_length')}, classes {', '.join(map(str, data.get('label_names', [])))}",
        f"protocol: preset {config['preset']}, {train['epochs']} epochs, batch {train['batch_size']}, AdamW, "
        f"linear schedule with {train['warmup_ratio']:.0%} warm-up",
    ]
    lines += execution_lines(records)
    if data.get("test_examples"):
        lines.append(
            f"selection: epoch{' and learning rate' if train.get('lr_grid') else ''} chosen on the dev set "
            f"({data.get('dev_examples')} examples, stratified); accuracy is on the test set ({data.get('test_examples')} "
            "examples), evaluated once per run for the chosen setting"
        )
    return lines


def render_markdown(records: list[dict[str, Any]], notes: str = "") -> str:
    finished = [r for r in records if r["result"]["status"] != "failed"]
    failed = [r for r in records if r["result"]["status"] == "failed"]
    lines = ["# peftbench comparison", ""]
    if not records:
        return "\n".join(lines + ["No runs yet.", ""])
    data = records[0].get("data", {})
    lines += [f"- {line}" for line in header_lines(records)]
    majority = {r["result"].get("majority_accuracy") for r in finished} - {None}
    if majority:
        which = "test" if data.get("test_examples") else "eval"
        lines.append(
            f"- **majority-class accuracy of the {which} set: {', '.join(f'{m:.4f}' for m in sorted(majority))}** "
            "(a method at this level learnt nothing)"
        )
    lines.append("")
    if notes:
        lines += [notes.strip(), ""]
    seeds_seen = {r["config"]["train"]["seed"] for r in finished}
    summary = summary_over_seeds(finished) if len(seeds_seen) > 1 or data.get("test_examples") else None
    if summary is not None:
        lines += _summary_lines(summary)
        lines += ["## Every run", ""]
    if finished:
        seeds = {r["config"]["train"]["seed"] for r in finished}
        columns = [_column_name(r, len(seeds) > 1) for r in finished]
        lines.append("| | " + " | ".join(columns) + " |")
        lines.append("|---|" + "---|" * len(columns))
        lines.append("| learning rate | " + " | ".join(_fmt(r["result"].get("chosen_lr", r["config"]["lr"]), "g") for r in finished) + " |")
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

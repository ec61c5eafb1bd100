"""report.md: the comparison in the reference's layout (metrics as rows, runs as columns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peftbench.analysis.classes import ClassScores, class_scores, classes_text, never_predicted
from peftbench.analysis.recommend import Constraints, Recommendation, recommend, sentences
from peftbench.analysis.stats import (
    ALPHA,
    NO_EVIDENCE,
    Analysis,
    Comparison,
    analyse,
    run_intervals,
    simultaneous_confidence,
)
from peftbench.models.named import NAMED
from peftbench.models.offline import DESCRIPTION as E5_DESCRIPTION
from peftbench.records import FINISHED, Status, better_on_dev
from peftbench.reporting.per_model import COLUMNS as MODEL_COLUMNS
from peftbench.reporting.per_model import ModelCosts, best_per_model_sentence, model_costs
from peftbench.run.measure import BUSY_ELSEWHERE, MEASUREMENT_NOTES
from peftbench.store.schema import DataSummary, Epoch, RunConfig, RunRecord


def _fmt(value: Any, pattern: str) -> str:
    if value is None or value == "":
        return "–"
    return format(value, pattern)


# (row label, the field of a run's result it shows, format)
ROWS: list[tuple[str, str, str]] = [
    ("status", "status", "s"),
    ("total params", "total_params", ","),
    ("trainable params", "trainable_params", ","),
    ("trainable %", "trainable_pct", ".4f"),
    ("peak memory (MB)", "peak_memory_mb", ".0f"),
    ("train speed (it/s)", "train_it_per_s", ".2f"),
    ("eval speed (it/s)", "eval_it_per_s", ".2f"),
    ("train samples/s", "train_samples_per_s", ".1f"),
    ("CPU busy elsewhere (share of its cores)", "cpu_busy_elsewhere", ".2f"),
    ("train time (min, eval excluded)", "train_time_min", ".4f"),
    ("total time (min, eval included)", "total_time_min", ".4f"),
    ("eval loss (sum over batches)", "eval_loss_sum", ".4f"),
    ("eval loss (mean)", "eval_loss", ".4f"),
    ("dev accuracy (chosen epoch)", "dev_accuracy", ".4f"),
    ("chosen epoch", "chosen_epoch", "d"),
    ("accuracy", "accuracy", ".4f"),
    ("F1 (macro)", "f1_macro", ".4f"),
]
# shown where some run measured them (runs of earlier versions did not)
INFERENCE_ROWS: list[tuple[str, str, str]] = [
    ("inference ms/example (batch 1)", "inference_ms_per_example", ".2f"),
    ("inference samples/s (eval batch)", "inference_samples_per_s", ".1f"),
    ("merged for inference", "inference_merged", ""),
]
INFERENCE_NOTE = (
    "the chosen weights after saving, merged into the base weights where peft can merge the method (as trained "
    "where it cannot: prompt-type methods, full fine-tuning); median latency of one example at batch 1 (the first "
    "32 of the split, each alone) and throughput over its first 512 at the evaluation batch size, in the run's "
    "precision"
)


def inference_measured(records: list[RunRecord]) -> bool:
    return any(r.result.inference_ms_per_example is not None for r in records)


# rows read from a run's intervals (stats.run_intervals), after ROWS
INTERVAL_ROWS = [("accuracy 95% interval", "accuracy_ci"), ("F1 (macro) 95% interval", "f1_macro_ci")]


def display_name(record: RunRecord, with_seed: bool = False) -> str:
    """The method, prefixed by its results folder when runs of several folders are compared."""
    name = record.source_label + record.method
    return f"{name} (seed {record.config.seed})" if with_seed else name


_column_name = display_name


def chosen_lr(record: RunRecord) -> float | None:
    """The rate a run was judged at: the one chosen on dev, else (runs made before the choice) the one asked."""
    return record.result.chosen_lr if record.result.chosen_lr is not None else record.config.lr


def summary_over_seeds(records: list[RunRecord]) -> Any:
    """One row per method over its finished seeds: accuracy mean, std, min, max and the cost beside it."""
    import pandas as pd

    rows = [
        {
            "method": display_name(r),
            "accuracy": r.result.accuracy,
            "f1_macro": r.result.f1_macro,
            "dev_accuracy": r.result.dev_accuracy,
            "chosen_lr": chosen_lr(r),
            "trainable_params": r.result.trainable_params,
            "train_time_min": r.result.train_time_min,
            "majority_accuracy": r.result.majority_accuracy,
            "flagged": r.status != Status.OK or bool(never_predicted(r)),
        }
        for r in records
        if r.status in FINISHED and r.result.accuracy is not None
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


def interval_text(low_high: tuple[float, float] | None) -> str:
    return "–" if low_high is None else f"[{low_high[0]:.4f}, {low_high[1]:.4f}]"


def _summary_lines(summary: Any, analysis: Analysis | None) -> list[str]:
    methods = {m.name: m for m in analysis.methods} if analysis else {}
    lines = [
        "## Summary over seeds (sorted by accuracy)",
        "",
        f"Intervals: 95% bootstrap over the {analysis.split if analysis else 'test'} examples, of the mean over "
        "seeds; ± is the std over seeds.",
        "",
        "| method | seeds | accuracy mean ± std | 95% interval | min–max | F1 macro [95% interval] | dev accuracy | "
        "lr | "
        "trainable params | train time (min) | flagged runs | runs not better than majority |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in summary.iterrows():
        std = "–" if row.accuracy_std != row.accuracy_std else f"{row.accuracy_std:.4f}"  # NaN: a single seed
        dev = "–" if row.dev_accuracy_mean != row.dev_accuracy_mean else f"{row.dev_accuracy_mean:.4f}"
        stats = methods.get(method)
        accuracy_ci = interval_text(stats.accuracy_ci) if stats else "–"
        f1 = f"{row.f1_macro_mean:.4f} {interval_text(stats.f1_macro_ci)}" if stats else f"{row.f1_macro_mean:.4f}"
        not_better = f"{stats.runs_not_better_than_majority} of {stats.seeds}" if stats else "–"
        lines.append(
            f"| {method} | {row.seeds} | {row.accuracy_mean:.4f} ± {std} | {accuracy_ci} | "
            f"{row.accuracy_min:.4f}–{row.accuracy_max:.4f} | "
            f"{f1} | {dev} | {row.chosen_lrs} | {int(row.trainable_params):,} | {row.train_time_min_mean:.2f} | "
            f"{row.flagged_runs} | {not_better} |"
        )
    return lines + [""]


def _model_cost_lines(costs: ModelCosts | None) -> list[str]:
    if costs is None:
        return []
    lines = [
        "## Cost per model",
        "",
        "Lowest–highest over each model's runs (its methods and seeds), measured as in the runs' table.",
        "",
        "| " + " | ".join(MODEL_COLUMNS) + " |",
        "|" + "---|" * len(MODEL_COLUMNS),
    ]
    return lines + ["| " + " | ".join(row) + " |" for row in costs.rows] + [""]


def _comparison_lines(analysis: Analysis) -> list[str]:
    lines = [
        "## Which differences are real",
        "",
        f"Each pair of methods on the same {analysis.split} examples: the difference of mean accuracy (A − B), "
        f"{comparison_interval_text(analysis)}, and a paired permutation test whose p-values are Holm-corrected "
        f"over the same {len(analysis.comparisons)} pairs (significant: corrected p < {ALPHA}).",
        "",
        "| A vs B | difference | simultaneous 95% interval | p (Holm) | significant |",
        "|---|---|---|---|---|",
    ]
    for c in analysis.comparisons:
        lines.append(
            f"| {c.a} vs {c.b} | {c.difference:+.4f} | [{c.ci[0]:+.4f}, {c.ci[1]:+.4f}] | {c.p_holm:.4f} | "
            f"{verdict_text(c)} |"
        )
    if any(c.disagrees for c in analysis.comparisons):
        lines += ["", DISAGREEMENT_NOTE]
    return lines + [""]


DISAGREEMENT_NOTE = (
    "(*) the interval and the test differ at the margin (bootstrap against permutations, Bonferroni against "
    "Holm's steps); the test decides the verdict and the recommendation."
)


def comparison_interval_text(analysis: Analysis) -> str:
    """How the pairwise intervals are made, in words: adjusted for as many pairs as the test is."""
    pairs = len(analysis.comparisons)
    if pairs == 1:
        return "its 95% paired bootstrap interval"
    level = simultaneous_confidence(pairs)
    return (
        f"its paired bootstrap interval at {level:.2%} each, so that all {pairs} hold together at 95% "
        "(Bonferroni: an interval that excludes 0 is a difference the corrected test also finds)"
    )


def verdict_text(comparison: Comparison) -> str:
    return ("yes" if comparison.significant else "no") + (" (*)" if comparison.disagrees else "")


@dataclass
class TrialScore:
    """A learning rate a run tried: how it ended, its best epoch on dev (None if none was usable), chosen or not."""

    lr: float
    status: Status
    best: Epoch | None
    chosen: bool


def trial_dev_scores(record: RunRecord) -> list[TrialScore]:
    """Each learning rate a run tried, with the dev figures of its best epoch and whether it was chosen."""
    scores = []
    for trial in record.result.trials_tried():
        best = None
        for epoch in trial.epochs:
            if epoch.eval_loss == epoch.eval_loss and better_on_dev(epoch, best):  # NaN loss: never chosen
                best = epoch
        scores.append(TrialScore(trial.lr, trial.status, best, trial.lr == record.result.chosen_lr))
    return scores


def trial_lines(records: list[RunRecord]) -> list[str]:
    """The lr-sensitivity table: dev accuracy at each rate tried (best epoch), per run; chosen rate in bold."""
    with_trials = [r for r in records if len(r.result.trials_tried()) > 1]
    if not with_trials:
        return []
    rates = sorted({t.lr for r in with_trials for t in r.result.trials_tried()})
    lines = [
        "## Learning rates tried (dev accuracy of the best epoch; chosen in bold)",
        "",
        "| run | " + " | ".join(f"lr {rate:g}" for rate in rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    for record in with_trials:
        by_rate = {t.lr: t for t in trial_dev_scores(record)}
        cells = []
        for rate in rates:
            trial = by_rate.get(rate)
            if trial is None or trial.best is None:
                cells.append("–" if trial is None else str(trial.status))
                continue
            text = f"{trial.best.accuracy:.4f}" + ("" if trial.status == Status.OK else f" ({trial.status})")
            cells.append(f"**{text}**" if trial.chosen else text)
        lines.append(f"| {display_name(record, True)} | " + " | ".join(cells) + " |")
    return lines + [""]


@dataclass
class Findings:
    """What the statistics say of a set of runs, and the recommendation computed from it (none without evidence)."""

    analysis: Analysis | None = None
    recommendation: Recommendation | None = None
    sentences: list[str] = field(default_factory=list)
    costs: ModelCosts | None = None  # per model, where the runs are of several (reporting.per_model)


def findings(records: list[RunRecord], constraints: Constraints | None = None) -> Findings:
    finished = [r for r in records if r.status not in (Status.FAILED, Status.DRY_RUN)]
    analysis = analyse(finished, display_name)
    costs = model_costs(finished, analysis, display_name)
    if analysis is None:
        scored = any(r.result.accuracy is not None for r in finished)
        return Findings(sentences=[NO_EVIDENCE[0].upper() + NO_EVIDENCE[1:] + "."] if scored else [], costs=costs)
    recommendation = recommend(analysis, constraints)
    lines = sentences(recommendation, analysis)
    if costs is not None and costs.best:
        lines.append(best_per_model_sentence(costs))
    if analysis.left_out:
        lines.append(f"Note: {analysis.left_out}.")
    return Findings(analysis, recommendation, lines, costs)


def execution_name(record: RunRecord) -> str:
    """How a run was executed, in a few words ("fast, bf16"); version-1 runs had no name for it."""
    train, result = record.config.train, record.result
    name = train.get("execution") or ("fast" if train.get("group_by_length") else "custom")
    precision = result.precision_used if result.precision_used is not None else train.get("precision")
    return f"{name}, {precision}"


def _device_line(record: RunRecord) -> str | None:
    device = record.provenance.device
    if device is None:
        return None
    flags = f" ({' '.join(device.flags)})" if device.flags else ""
    auto = device.auto
    resolved = f"; precision auto → {auto.precision}: {auto.precision_why}" if auto else ""
    return f"device: {device.name}{flags}{resolved}"


def execution_lines(records: list[RunRecord]) -> list[str]:
    """The execution and the device, and one line saying so when the runs of one report differ in them."""
    counts: dict[str, int] = {}
    for record in records:
        counts[execution_name(record)] = counts.get(execution_name(record), 0) + 1
    devices = sorted({line for line in map(_device_line, records) if line})
    if len(counts) == 1:
        lines = [f"execution: {next(iter(counts))}"]
    else:
        shown = "; ".join(f"{name} ×{n}" for name, n in sorted(counts.items()))
        lines = [
            f"executions differ between these runs ({shown}): accuracy is comparable, time and memory only within one "
            "execution"
        ]
    if len(devices) > 1:
        lines.append(f"runs were made on {len(devices)} different devices: time and memory compare only within one")
    notes = sorted({r.result.attention_note for r in records if r.result.attention_note})
    lines += [f"attention: {note}" for note in notes]
    return lines + _worker_start_lines(records) + devices + _shared_cpu_lines(records)


WARM = "warm start (each worker process forked from one that had already imported torch, transformers and peft)"


def _worker_start_lines(records: list[RunRecord]) -> list[str]:
    """How the runs' worker processes started (--warm-start); runs in the grid process (inline) say nothing."""
    counts: dict[str, int] = {}
    for start in (r.result.worker_start for r in records if r.result.worker_start):
        counts[start] = counts.get(start, 0) + 1
    if not counts:
        return []
    named = {
        start: WARM if start == "warm" else f"{start.replace('cold', 'cold start', 1)} (a fresh interpreter)"
        for start in counts
    }
    if len(counts) == 1:
        return [f"workers: {named[next(iter(counts))]}"]
    return ["workers: " + "; ".join(f"{named[start]} ×{n}" for start, n in sorted(counts.items()))]


def _shared_cpu_lines(records: list[RunRecord]) -> list[str]:
    """A line when other processes took a share of some run's CPU cores: its speeds are not the method's."""
    shares = [r.result.cpu_busy_elsewhere for r in records if r.result.cpu_busy_elsewhere is not None]
    busy = [share for share in shares if share >= BUSY_ELSEWHERE]
    if not busy:
        return []
    return [
        f"shared CPU: other processes used {BUSY_ELSEWHERE:.0%} or more of the CPU cores of {len(busy)} of "
        f"{len(shares)} runs (up to {max(busy):.0%}): their times and speeds read high, compare them with care "
        "(one training per set of cores: `taskset -c 0 peftbench run ...`)"
    ]


def _pooler_text(records: list[RunRecord]) -> str:
    trained = {bool(r.config.train.get("train_pooler")) for r in records}
    if trained == {True}:
        return "its pooler was trained with the classifier head by every method (--train-pooler on)"
    if trained == {False}:
        return "its pooler was frozen for the PEFT methods and trained only by full fine-tuning (and BitFit's biases)"
    return "its pooler was trained with the head in some runs and frozen in others (--train-pooler differs)"


def _read_as(data: DataSummary) -> str:
    encoding = data.encoding
    return f" (read as {encoding})" if encoding and encoding != "binary" else ""  # Parquet and Arrow hold decoded text


def _truncation_text(data: DataSummary, config: RunConfig) -> str:
    """How much the length cut: the share of texts longer than max_length, per split."""
    shares = data.truncated_share
    if not shares:
        return ""
    how = (
        f"auto: the shortest that keeps {config.data.get('max_length_keep', 0.95):.0%} of training texts whole, "
        "within the model's limit; "
        if config.data.get("max_length_requested") == "auto"
        else ""
    )
    shown = ", ".join(f"{share:.1%} of {name}" for name, share in shares.items())
    return f" ({how}truncates {shown})"


def header_lines(records: list[RunRecord]) -> list[str]:
    """What was compared and how, one sentence per line (shared by report.md and report.html)."""
    first = records[0]
    config, data = first.config, first.data
    train = config.train
    models = sorted({r.config.model for r in records})
    lines = [
        f"model: {', '.join(models)}",
        f"data: {data.source}{_read_as(data)}: {data.train_examples} train / "
        f"{data.eval_examples} eval examples"
        f"{' (text pairs)' if data.text_pair else ''}, max_length "
        f"{data.max_length}{_truncation_text(data, config)}, "
        f"classes {', '.join(map(str, data.label_names))}",
        f"protocol: preset {config.preset}, {train['epochs']} epochs, batch {train['batch_size']}, AdamW, "
        f"linear schedule with {train['warmup_ratio']:.0%} warm-up",
    ]
    files = [
        f"{name} set {source}" for name, source in (("dev", data.dev_source), ("test", data.test_source)) if source
    ]
    if files:
        lines.insert(2, f"given splits: the {' and the '.join(files)}, as shipped, not held out of {data.source}")
    for name in models:
        if name == "e5-small-offline":
            lines.append(f"e5-small-offline: {E5_DESCRIPTION}; {_pooler_text(records)}")
        elif name in NAMED:
            lines.append(f"{name}: {NAMED[name].description()}")
    lines += execution_lines(records)
    if data.test_examples:
        chosen = (
            f"epoch{' and learning rate' if train.get('lr_grid') else ''} chosen on the dev set "
            f"({data.dev_examples} examples, stratified)"
        )
        if _select_only(records):
            lines.append(f"selection: {chosen}; --select-only: the test split was never evaluated")
        else:
            lines.append(
                f"selection: {chosen}; accuracy is on the test set ({data.test_examples} examples), evaluated "
                "once "
                "per run for the chosen setting"
            )
    sources = sorted({str(r.config.train["lr_from"]) for r in records if r.config.train.get("lr_from")})
    if sources:
        lines.append(f"learning rates: each method's as its runs in {', '.join(sources)} chose it on dev (--lr-from)")
    return lines


def _select_only(records: list[RunRecord]) -> bool:
    return all(r.config.select_only for r in records)


def render_markdown(records: list[RunRecord], notes: str = "", found: Findings | None = None) -> str:
    finished = [r for r in records if r.status != Status.FAILED]
    failed = [r for r in records if r.status == Status.FAILED]
    lines = ["# peftbench comparison", ""]
    if not records:
        return "\n".join(lines + ["No runs yet.", ""])
    lines += _header_lines(records, finished)
    found = findings(records) if found is None else found
    if found.sentences:
        lines += ["## Recommendation (computed from the runs below)", ""]
        lines += [f"- {line}" for line in found.sentences] + [""]
    if notes:
        lines += [notes.strip(), ""]
    seeds_seen = {r.config.seed for r in finished}
    tested = records[0].data.test_examples
    summary = summary_over_seeds(finished) if len(seeds_seen) > 1 or tested else None
    if summary is not None:
        lines += _summary_lines(summary, found.analysis)
    lines += _model_cost_lines(found.costs)
    if found.analysis is not None and found.analysis.comparisons:
        lines += _comparison_lines(found.analysis)
    lines += trial_lines(finished)
    lines += _class_lines(finished)
    if summary is not None:
        lines += ["## Every run", ""]
    if finished:
        lines += _every_run_lines(finished)
    if failed:
        lines += ["## Failed runs", ""]
        lines += [f"- {_column_name(record, True)}: {record.result.error or ''}" for record in failed] + [""]
    return "\n".join(lines + _measurement_lines(finished))


def _header_lines(records: list[RunRecord], finished: list[RunRecord]) -> list[str]:
    """The protocol in a few lines, and the majority class that every accuracy is to be read against."""
    lines = [f"- {line}" for line in header_lines(records)]
    majority = {m for r in finished if (m := r.result.majority_accuracy) is not None}
    if majority and not _select_only(records):  # the majority figure is the test set's, which selection never reads
        which = "test" if records[0].data.test_examples else "eval"
        lines.append(
            f"- **majority-class accuracy of the {which} set: {', '.join(f'{m:.4f}' for m in sorted(majority))}** "
            "(a method at this level learnt nothing)"
        )
    return lines + [""]


def _every_run_lines(finished: list[RunRecord]) -> list[str]:
    """The reference's layout: metrics as rows, runs as columns; then what each flagged run's status means."""
    seeds = {r.config.seed for r in finished}
    columns = [_column_name(r, len(seeds) > 1) for r in finished]
    rates = " | ".join(_fmt(chosen_lr(r), "g") for r in finished)
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns), f"| learning rate | {rates} |"]
    for label, name, pattern in ROWS + (INFERENCE_ROWS if inference_measured(finished) else []):
        lines.append(f"| {label} | " + " | ".join(_fmt(getattr(r.result, name), pattern) for r in finished) + " |")
    intervals = [run_intervals(r) for r in finished]
    if any(intervals):
        for label, key in INTERVAL_ROWS:
            lines.append(f"| {label} | " + " | ".join(interval_text(i.get(key)) for i in intervals) + " |")
    lines.append("")
    flagged = [r for r in finished if r.status not in (Status.OK, Status.DRY_RUN)]
    for record in flagged:
        lines.append(f"- **{_column_name(record, True)} {record.status}**: {record.result.note or ''}")
    missing = missing_class_notes(finished)
    lines += [f"- {note}" for note in missing]
    return lines + ([""] if flagged or missing else [])


def missing_class_notes(finished: list[RunRecord]) -> list[str]:
    """One line per run that never predicted a class of its split (an `ok` run too: its status does not say it)."""
    notes = []
    for record in finished:
        missed = never_predicted(record) if record.status == Status.OK else []
        if missed:
            shown = classes_text([f"{c.label} ({c.support} examples)" for c in missed])
            notes.append(f"{display_name(record, True)} never predicted {shown}: zero recall there")
    return notes


@dataclass
class ClassTable:
    """Recall / precision per run (rows) and class (columns), for data of more than two classes."""

    split: str
    labels: list[str]
    rows: list[tuple[str, list[str]]]


def _class_cell(scores: ClassScores | None) -> str:
    if scores is None:
        return "–"
    recall = "–" if scores.recall is None else f"{scores.recall:.2f}"
    precision = "–" if scores.precision is None else f"{scores.precision:.2f}"
    return f"{recall} / {precision}"


def class_table(finished: list[RunRecord]) -> ClassTable | None:
    scored = [(r, class_scores(r)) for r in finished]
    scored = [(r, scores) for r, scores in scored if scores]
    if not scored or max(len(scores) for _, scores in scored) <= 2:
        return None
    labels = list(dict.fromkeys(c.label for _, scores in scored for c in scores))
    rows = []
    for record, scores in scored:
        by_label = {c.label: c for c in scores}
        rows.append((display_name(record, True), [_class_cell(by_label.get(label)) for label in labels]))
    return ClassTable(scored[0][0].result.predictions_split or "test", labels, rows)


def _class_lines(finished: list[RunRecord]) -> list[str]:
    table = class_table(finished)
    if table is None:
        return []
    lines = [
        f"## Per class (recall / precision on the {table.split} split; 0.00 recall: a class the run never predicts)",
        "",
        "| run | " + " | ".join(table.labels) + " |",
        "|---|" + "---|" * len(table.labels),
    ]
    lines += [f"| {run} | " + " | ".join(cells) + " |" for run, cells in table.rows]
    return lines + [""]


def _measurement_lines(finished: list[RunRecord]) -> list[str]:
    lines = ["## How the figures were measured", ""]
    lines += [f"- `{key}`: {text}" for key, text in MEASUREMENT_NOTES.items()]
    memory = {m for r in finished if (m := r.result.peak_memory_method) is not None}
    lines += [f"- `peak_memory_mb`: {m}" for m in sorted(memory)]
    if inference_measured(finished):
        lines.append(f"- `inference_ms_per_example`, `inference_samples_per_s`: {INFERENCE_NOTE}")
    return lines + [""]

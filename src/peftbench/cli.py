"""Command line: `peftbench run`, `peftbench methods`. Bad input exits 2 with one line on stderr."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import signal
import sys
import typing
from pathlib import Path
from typing import Any, NoReturn

from peftbench.config import files as config_files
from peftbench.config.presets import PRESETS
from peftbench.config.sections import DataConfig, GridConfig, ScaleConfig, TrainConfig, option, output_folder
from peftbench.config.values import from_text, metavar
from peftbench.errors import UserError
from peftbench.interrupts import Interrupted, stop_signals

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1
# a full disk, a quota, a read-only or forbidden folder: the user's to fix, said in one line
FILE_SYSTEM_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (the usage is one --help away)."""

    run_command: argparse.ArgumentParser | None = None  # `run`'s own parser, which reads config files

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _folder(text: str) -> Path:
    """An output folder's name, checked by config's output_folder (argparse names the option itself)."""
    try:
        return output_folder(text, flag="")
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None


def _typed(hint: Any) -> Any:
    """An argparse type from a config field's annotation (its ValueError becomes argparse's one-line error)."""

    def parsed(text: str) -> Any:
        try:
            return from_text(hint, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parsed


def _add_section(parser: argparse.ArgumentParser, cls: type) -> None:
    group = parser.add_argument_group(cls.__doc__.splitlines()[0].rstrip(".") if cls.__doc__ else cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            default = "on" if default else "off"
        shown = metavar(hints[f.name])
        shown_default = "" if default is None and "Unset:" in f.metadata.get("help", "") else f" (default: {default})"
        group.add_argument(
            option(f.name),
            dest=f.name,
            type=_typed(hints[f.name]),
            default=None,
            metavar=shown,
            help=f"{f.metadata.get('help', '')}{shown_default}".replace("%", "%%"),  # argparse formats help with %
        )


def _section_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="peftbench", description="Compare fine-tuning methods for a text classifier.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    parser.run_command = _add_run(commands)
    commands.add_parser("methods", help="list the registered methods with their settings")
    models_help = "list the named offline models (--model NAME): what each is, whether it is installed here"
    commands.add_parser("models", help=models_help)
    _add_predict(commands)
    _add_report_commands(commands)
    return parser


def _add_run(commands: Any) -> argparse.ArgumentParser:
    run = commands.add_parser("run", help="fine-tune with each method and write the comparison")
    run.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML or JSON file whose keys are this command's options (max_train_samples: 512, methods: "
        "[lora, full]); options typed on the command line win. Every grid writes its own as DIR/config.yaml",
    )
    model_help = "hub id, local model folder, or a named offline model (peftbench models lists them)"
    run.add_argument("--model", required=True, help=model_help)
    methods_help = "comma-separated method names, 'seed' for the reference's five, 'all' for every method"
    run.add_argument("--methods", default="seed", help=methods_help)
    run.add_argument("--preset", default="seed", choices=sorted(PRESETS), help="protocol to start from (default: seed)")
    out_help = "output folder (default: peftbench-results)"
    run.add_argument("--out", type=_folder, default=Path("peftbench-results"), help=out_help)
    dry_help = "build every method and record its parameter counts; no training"
    run.add_argument("--dry-run", action="store_true", help=dry_help)
    run.add_argument(
        "--select-only",
        action="store_true",
        help="choose epoch (and rate, with --lr-grid) on dev and stop: the test split is never evaluated and no "
        "weights are saved; for choosing settings, e.g. the learning rates of the registry (needs a dev set)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--report-to",
        default="none",
        metavar="TRACKERS",
        help="log each finished run (config, loss and learning rate per step, dev metrics per epoch, test metrics) "
        "to experiment trackers: comma-separated of tensorboard, mlflow, trackio (pip install "
        "'peftbench[tensorboard]' etc.), or none (default)",
    )
    run.add_argument("--seeds", help="comma-separated seeds, one run per method and seed (default: --seed)")
    for section in (DataConfig, TrainConfig, ScaleConfig):
        _add_section(run, section)
    return run


def _add_predict(commands: Any) -> None:
    predict = commands.add_parser("predict", help="label texts with a trained run: one label and probability per line")
    predict.add_argument("--run", type=Path, required=True, help="a run's weights folder: DIR/<method>__seed<seed>")
    predict.add_argument("texts", nargs="*", help="texts to label; none: read --input, or standard input, one per line")
    predict.add_argument("--input", type=Path, help="file with one text per line")
    merge_help = "instead: write the run merged into a standalone model (LoRA-type methods)"
    predict.add_argument("--merge", type=_folder, metavar="OUT", help=merge_help)


def _add_report_commands(commands: Any) -> None:
    compare = commands.add_parser(
        "compare", help="one report over the runs of several output folders (models, datasets)"
    )
    compare.add_argument("dirs", type=Path, nargs="+", help="output folders of peftbench run")
    out_help = "folder for the combined results.csv, report.md and report.html"
    compare.add_argument("--out", type=_folder, required=True, help=out_help)
    report_help = "rebuild results.csv and report.md of an output folder from its run files"
    report = commands.add_parser("report", help=report_help)
    report.add_argument("dir", type=Path)
    for command in (report, compare):
        params_help = "recommend among methods that train at most N parameters"
        command.add_argument("--max-trainable-params", type=_positive, metavar="N", help=params_help)
        memory_help = "recommend among methods whose peak memory is at most MB"
        command.add_argument("--max-memory-mb", type=_positive, metavar="MB", help=memory_help)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _constraints(args: argparse.Namespace) -> Any:
    from peftbench.analysis.recommend import Constraints

    return Constraints(max_trainable_params=args.max_trainable_params, max_memory_mb=args.max_memory_mb)


def grid_from_args(args: argparse.Namespace) -> GridConfig:
    from peftbench.runner.build import build_grid

    return build_grid(
        args.model,
        args.methods,
        args.out,
        preset=args.preset,
        data=_section_values(args, DataConfig),
        train=_section_values(args, TrainConfig),
        scale=_section_values(args, ScaleConfig),
        seeds=args.seeds,
        dry_run=args.dry_run,
        select_only=args.select_only,
        report_to=args.report_to,
    )


def _print_methods() -> None:
    from peftbench.methods import GROUPS, REGISTRY

    for method in REGISTRY.values():
        settings = ", ".join(f"{k}={v}" for k, v in method.hyperparameters.items()) or "-"
        print(f"{method.name:15} lr {method.recommended_lr:<8g} {settings}")
        print(f"{'':15} {method.summary}" + (f" [lr: {method.source}]" if method.source else ""))
    for name, members in GROUPS.items():
        print(f"group {name}: {', '.join(members)}")


def _predict(args: argparse.Namespace) -> int:
    from peftbench.predict import merge, predict, run_warning

    if args.merge is not None:
        merge(args.run, args.merge)
        print(f"wrote {args.merge}")
        return 0
    if args.texts:
        texts = args.texts
    elif args.input is not None:
        try:
            texts = args.input.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read --input {args.input}: {exc}") from None
    else:
        texts = sys.stdin.read().splitlines()
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError("no text to label")
    warning = run_warning(args.run)
    if warning:
        print(f"peftbench: warning: {warning}", file=sys.stderr)
    for text, (label, probability) in zip(texts, predict(args.run, texts)):
        print(f"{label}\t{probability:.4f}\t{text}")
    return 0


def _compare(folders: list[Path], out: Path, constraints: Any) -> int:
    from peftbench.reporting.reports import write_reports
    from peftbench.store.runs import ResultStore

    records = []
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder")
        if out.resolve() == folder.resolve():
            raise UserError(f"--out {out} is one of the compared folders; choose a new folder")
        found = ResultStore(folder, read_only=True).records()
        if not found:
            raise UserError(f"{folder} holds no run files (runs/*.json)")
        for record in found:
            record.source_label = f"{folder.resolve().name}/"  # tells apart runs of the same method
        records += found
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    for path in write_reports(out, records, constraints):
        print(f"wrote {path}")
    return 0


def _report(folder: Path, constraints: Any) -> int:
    from peftbench.reporting.reports import write_reports
    from peftbench.store.runs import ResultStore

    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    records = ResultStore(folder, read_only=True).records()
    if not records:
        raise UserError(f"{folder} holds no run files (runs/*.json)")
    for path in write_reports(folder, records, constraints):
        print(f"wrote {path}")
    return 0


def _with_config_file(argv: list[str], parser: OneLineParser) -> list[str]:
    """`run --config FILE ...`: the file's options, then the typed ones (which so win)."""
    if not argv or argv[0] != "run":
        return argv
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--config", type=Path)
    found, typed = finder.parse_known_args(argv[1:])
    if found.config is None:
        return argv
    options = config_files.read_options(found.config)
    assert parser.run_command is not None  # set by build_parser
    return ["run", *config_files.as_arguments(options, parser.run_command, found.config), *typed]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        argv = _with_config_file(list(sys.argv[1:] if argv is None else argv), parser)
    except UserError as exc:
        print(f"peftbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)
    try:
        with stop_signals():
            return _main(args)
    except BrokenPipeError:  # `peftbench methods | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


def _prestart_workers(args: argparse.Namespace) -> None:
    """The first workers' warm process, started before this process imports the rest (transformers, peft and
    the reports' libraries: 4-5 s), so that on two cores both import at once; settings it cannot read are left
    for run_grid to report."""
    from peftbench.execution.executors import prestart

    try:
        scale = ScaleConfig(**_section_values(args, ScaleConfig))
        scale.validate()
        prestart(scale, progress=not args.no_progress)
    except (UserError, TypeError, ValueError):
        return


def _main(args: argparse.Namespace) -> int:
    try:
        if args.command == "methods":
            _print_methods()
            return 0
        if args.command == "models":
            from peftbench.models.named import listing

            print("\n".join(listing()))
            return 0
        if args.command == "report":
            return _report(args.dir, _constraints(args))
        if args.command == "predict":
            return _predict(args)
        if args.command == "compare":
            return _compare(args.dirs, args.out, _constraints(args))
        _prestart_workers(args)
        from peftbench.runner.scheduling import run_grid

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError(
                "peftbench run plans the grid in one process; for data-parallel runs use peftbench run "
                "--num-processes N (without accelerate launch or torchrun)"
            )
        summary = run_grid(grid_from_args(args), progress=not args.no_progress)
    except UserError as exc:
        print(f"peftbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:  # interrupts.Interrupted for a signal; a bare one counts as Ctrl-C
        stopped = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        print(
            f"peftbench: stopped by {signal.Signals(stopped.signum).name}; finished runs are saved and are skipped "
            "when the command is run again",
            file=sys.stderr,
        )
        return stopped.exit_code
    except OSError as exc:
        if exc.errno not in FILE_SYSTEM_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"peftbench: error: cannot write{where}: {exc.strerror}; finished runs are saved", file=sys.stderr)
        return EXIT_BAD_INPUT
    elsewhere = f", {summary.elsewhere} left to other processes" if summary.elsewhere else ""
    print(f"{summary.ran} run(s) done, {summary.skipped} skipped, {summary.failed} failed{elsewhere}")
    for path in summary.out_files:
        print(f"wrote {path}")
    return EXIT_RUN_FAILED if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())

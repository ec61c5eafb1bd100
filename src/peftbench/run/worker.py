"""One piece of a run's work, in a process of its own: plain data in (a request), plain data out (a response).

    python -m peftbench.run.worker REQUEST.json RESPONSE.json

The grid process (runner/) plans, tokenises once and alone writes the store; a worker loads the model,
trains it at one learning rate (a *trial*), and, when that trial is the run's only one, finishes the run
in the same process: the one evaluation of the test split and the saved weights. With an lr grid each
trial saves the trainable weights it would be judged by, the grid process chooses on dev, and a *finish*
worker loads the chosen trial's weights for the test evaluation and the saving. Each worker's peak memory
is its own, and a worker that crashes takes only its run with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from peftbench.config.sections import TrainConfig, steps_per_epoch
from peftbench.data import TokenizedData
from peftbench.errors import UserError, first_line
from peftbench.hardware import describe as describe_device
from peftbench.hardware import (
    keep_to_given_cpus,
    length_multiple,
    likely_device,
    resolve_attention,
    resolve_dropout_masks,
    resolve_precision,
    resolve_split_by_length,
)
from peftbench.interrupts import stop_signals
from peftbench.methods import REGISTRY, pooler_modules
from peftbench.models import classifier as models
from peftbench.models.saved import save_trained
from peftbench.records import TESTED, Status
from peftbench.run.inference import inference_cost
from peftbench.run.loop import (
    TrainOutcome,
    Trial,
    collapse_note,
    evaluate_once,
    planned_steps,
    restore_trainable,
    store_frozen_weights_in,
    train_and_evaluate,
)
from peftbench.run.measure import CpuLoad, PeakMemory, count_parameters, now
from peftbench.run.messages import TRIAL, Finished, Params, Resolved, TrialOutcome, WorkRequest, WorkResponse
from peftbench.run.search import HalvingTrial

PRECISION_TO_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def load_tokenized(path: str) -> TokenizedData:
    return TokenizedData(**json.loads(Path(path).read_text(encoding="utf-8")))


def write_tokenized(data: TokenizedData, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(data)), encoding="utf-8")


@dataclasses.dataclass
class _Setup:
    """What every piece of work needs, made once per worker."""

    request: WorkRequest
    train: TrainConfig
    data: TokenizedData
    tokenizer: Any
    collator: Any
    accelerator: Any
    precision: str
    attention: str
    attention_note: str | None = None  # set when the model refuses the kernel asked for (models.attention_of)


def _setup(request: WorkRequest) -> _Setup:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    train = TrainConfig(**request.train)
    device = likely_device(request.device)
    precision = resolve_precision(train.precision, device)
    attention = resolve_attention(train.attention, device)
    # Several processes (--num-processes) split each batch between them: the global batch, the number of
    # steps (AdaLoRA's schedule) and so the experiment stay those of one process.
    accelerator = Accelerator(
        mixed_precision=PRECISION_TO_ACCELERATE[precision],
        cpu=device.type == "cpu",
        # non_blocking: batches from pinned memory (build_loaders, on a GPU) are copied while the GPU computes
        dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=device.type == "cuda"),
    )
    if train.batch_size % accelerator.num_processes:
        raise UserError(
            f"--batch-size {train.batch_size} does not split evenly over {accelerator.num_processes} processes"
        )
    tokenizer = models.load_tokenizer(request.model_path)
    model_config = models.load_config(request.model_path)
    models.configure_padding(tokenizer, model_config)
    data = load_tokenized(request.data_file)
    collator = models.Collator(tokenizer, models.is_decoder(model_config), length_multiple(device))
    return _Setup(request, train, data, tokenizer, collator, accelerator, precision, attention)


def _build_model(setup: _Setup) -> tuple[Any, Params]:
    """The pretrained classifier with the method applied, and its parameter counts."""
    from transformers import set_seed

    method = REGISTRY[setup.request.method]
    set_seed(setup.train.seed)  # the new classifier head's initial weights depend on it
    labels = setup.data.label_names
    model = models.load_classifier(
        setup.request.model_path, len(labels), labels, setup.tokenizer.pad_token_id, setup.attention, replace_head=True
    )
    setup.attention, setup.attention_note = models.attention_of(model, setup.attention)
    head_extra = pooler_modules(model) if setup.train.train_pooler else ()
    model = method.build(model, total_steps=planned_steps(len(setup.data.train), setup.train), head_extra=head_extra)
    total, trainable = count_parameters(model)
    params = Params(total_params=total, trainable_params=trainable, trainable_pct=100.0 * trainable / total)
    if setup.precision == "bf16" and setup.train.frozen_weights_bf16:
        params.frozen_tensors_in_bf16 = store_frozen_weights_in(model, torch.bfloat16)
    return model, params


def _outcome_as_data(outcome: TrainOutcome) -> TrialOutcome:
    """The outcome as it crosses to the grid process: all but the weights."""
    return TrialOutcome(**{f.name: getattr(outcome, f.name) for f in dataclasses.fields(TrialOutcome)})


def _trial(setup: _Setup) -> WorkResponse:
    """Train at one learning rate; finish the run here too when asked (the run's only trial)."""
    request = setup.request
    model, params = _build_model(setup)
    response = WorkResponse(params=params)
    if request.dry_run:
        return response
    choose_on_dev = setup.data.test is not None
    search = _halving(setup)
    trial = Trial(
        setup.data.train,
        setup.data.eval,
        setup.collator,
        setup.train,
        request.lr,
        label=request.label,
        progress=request.progress,
        keep_best=choose_on_dev,
        after_step=REGISTRY[request.method].after_step,
        after_evaluation=search.should_stop if search else None,
    )
    outcome = train_and_evaluate(model, trial, setup.accelerator)
    if search is not None:
        best = outcome.best()
        search.finish(best["accuracy"] if best else None, stopped=outcome.pruned_at_step is not None)
    response.outcome = _outcome_as_data(outcome)
    if outcome.best_state is not None:
        restore_trainable(setup.accelerator.unwrap_model(model), outcome.best_state)  # the state judged on dev
    if request.finish_in_trial:
        response.finished = _finish(setup, model, response.outcome)
    elif outcome.best_state is not None and request.state_file and setup.accelerator.is_main_process:
        from safetensors.torch import save_file

        save_file(outcome.best_state, request.state_file)
    return response


def _halving(setup: _Setup) -> HalvingTrial | None:
    """This rate's trial in its run's successive-halving study (--search halving), its first rung at the step
    of the first evaluation."""
    journal = setup.request.search_journal
    if journal is None:
        return None
    config = setup.train
    epoch = steps_per_epoch(len(setup.data.train), config.batch_size)
    first = min(config.eval_every or epoch, epoch)
    return HalvingTrial(journal, setup.request.run_id, first)


def _finish_only(setup: _Setup) -> WorkResponse:
    """Finish a run whose trial ran in another worker: rebuild the model, load the chosen weights, finish."""
    from safetensors.torch import load_file

    model, params = _build_model(setup)
    request = setup.request
    assert request.state_file is not None and request.outcome is not None  # what a finish is sent
    restore_trainable(model, load_file(request.state_file))
    return WorkResponse(params=params, finished=_finish(setup, model, request.outcome))


def _finish(setup: _Setup, model: Any, outcome: TrialOutcome) -> Finished:
    """The chosen weights: one evaluation of the test split (when there is one), their status, their files."""
    request, data = setup.request, setup.data
    finished = Finished(status=outcome.status, note=outcome.note)
    if data.test is not None:
        if outcome.best_epoch is None:
            return finished  # diverged before any usable evaluation: nothing to test or keep
        # The test split is read here, once, for the setting chosen on dev.
        started = now()
        test = evaluate_once(
            model,
            data.test,
            setup.collator,
            setup.train,
            setup.accelerator,
            request.progress,
            f"{request.label} test",
        )
        finished.test_time_s = now() - started
        finished.predictions = test.pop("predictions")
        finished.test = test
        # The status describes the weights that were tested, whatever a later epoch did.
        note = collapse_note(test["top_predicted_class_share"], "test")
        later = outcome.note if outcome.status == Status.DIVERGED else ""
        finished.status = Status.COLLAPSED if note else Status.OK
        tested = later and f"{later}: epoch {outcome.best_epoch}, best on dev, was tested"
        finished.note = "; ".join(n for n in (note, tested, outcome.stopped_early) if n)
    if finished.status in TESTED and setup.accelerator.is_main_process:
        folder = Path(request.weights_dir)
        finished.adapter_size_mb = save_trained(
            setup.accelerator.unwrap_model(model),
            setup.tokenizer,
            folder,
            REGISTRY[request.method],
            request.base_model,
            data.label_names,
            data.description["max_length"],
            setup.precision,
        )
        # after saving (merging changes the model) and on the split the run was judged on
        split = data.test if data.test is not None else data.eval
        finished.inference = inference_cost(
            setup.accelerator.unwrap_model(model), split, setup.collator, setup.train, setup.accelerator.autocast
        )
    return finished


def work(request: WorkRequest) -> WorkResponse:
    """Do one request; every failure of the work itself comes back as data, not as an exception."""
    try:
        device = likely_device(request.device)
    except UserError:
        device = torch.device("cpu")  # _setup below raises the same error, which then comes back as data
    if not request.progress:
        # transformers' own bars ("Writing model shards") would break the grid's one line per run
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()
    memory, load = PeakMemory(device), CpuLoad()
    memory.start()
    load.start()
    try:
        setup = _setup(request)
        response = _trial(setup) if request.kind == TRIAL else _finish_only(setup)
        response.resolved = Resolved(
            precision_used=setup.precision,
            attention_used=setup.attention,
            attention_note=setup.attention_note,
            dropout_masks_used=resolve_dropout_masks(
                setup.train.dropout_masks, setup.accelerator.device, setup.precision
            ),
            split_by_length_used=resolve_split_by_length(setup.train.split_by_length, setup.accelerator.device),
            device=describe_device(setup.accelerator.device),
            processes=setup.accelerator.num_processes,
            global_batch_size=setup.train.batch_size,
            per_process_batch_size=setup.train.batch_size // setup.accelerator.num_processes,
        )
    except (Exception, UserError) as exc:  # one broken method must not stop the grid: keep the error and go on
        response = WorkResponse(error=f"{type(exc).__name__}: {first_line(exc)}", traceback=traceback.format_exc())
    return dataclasses.replace(response, **memory.report(), **load.report())


def _stop_inside_a_finalizer(unraisable: Any) -> None:
    """A stop signal (the grid stopping this worker) that lands inside a finalizer (a __del__) cannot
    propagate: Python would print it as an ignored exception, traceback and all, on the grid's terminal and
    go on. The worker ends there instead, with the exit code it would have returned."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(getattr(unraisable.exc_value, "exit_code", 130))
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    request_path, response_path = argv or sys.argv[1:]
    sys.unraisablehook = _stop_inside_a_finalizer
    keep_to_given_cpus()  # before torch starts its threads, which take this thread's cores
    try:
        with stop_signals():
            response = work(WorkRequest.from_json(Path(request_path).read_text(encoding="utf-8")))
    except KeyboardInterrupt as exc:  # stopped by the grid process (or a scheduler's SIGTERM); the grid tells the user
        return getattr(exc, "exit_code", 130)
    if int(os.environ.get("RANK", "0")) == 0:  # of several data-parallel processes, the main one answers
        Path(response_path).write_text(response.to_json(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

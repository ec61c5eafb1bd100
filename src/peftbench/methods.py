"""The method registry: everything method-specific lives in an entry here, never in the training loop.

An entry says how to turn a freshly loaded classifier into the model to train (a peft config class and
its hyperparameters, or none for full fine-tuning), the learning rate it is usually trained with, and any
hook it needs after wrapping. Adding a method means adding an entry; tests pick it up automatically.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from peftbench.models.compat import accept_past_key_values
from peftbench.errors import UserError, first_line
from peftbench.models.classifier import is_norm


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    recommended_lr: float  # what the method is usually trained with (SPEC.md, peft's examples)
    peft_config_class: str | None = None  # name of a class in `peft`; None trains every parameter
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    after_wrap: Callable[[Any], None] | None = None  # fix-ups on the wrapped model, e.g. compat shims
    # Without a peft config: which parameters to train, by name (None trains all of them).
    trainable: Callable[[str], bool] | None = None
    source: str = ""  # where the defaults and the learning rate come from
    # Hyperparameters that depend on the run's number of optimiser steps (AdaLoRA's rank-budget schedule).
    schedule: Callable[[int], dict[str, Any]] | None = None
    # Called after every optimiser step, before the gradients are cleared, with the unwrapped model and the
    # 1-based step number (AdaLoRA reallocates its rank budget from the gradients there).
    after_step: Callable[[Any, int], None] | None = None
    # Which layers the method adapts when the model has none of the target_modules named here (the names are
    # BERT's): "attention" (the attention projections peft targets by default for the model's family, else
    # every linear layer of its attention blocks) or "norms" (every normalisation layer). None: peft's default.
    targets: str | None = None

    def build(self, model: Any, total_steps: int = 1, head_extra: tuple[str, ...] = ()) -> Any:
        """Wrap (or not) a freshly loaded classifier for a run of total_steps optimiser steps; the classifier
        head is always trained, and so are the modules named in head_extra (e.g. BERT's pooler)."""
        if self.peft_config_class is None:
            for name, parameter in model.named_parameters():
                chosen = self.trainable is None or self.trainable(name)
                parameter.requires_grad_(chosen or _is_head(model, name) or _in_modules(name, head_extra))
            return model
        import peft

        config_class = getattr(peft, self.peft_config_class)
        scheduled = self.schedule(total_steps) if self.schedule is not None else {}
        # modules_to_save: trained, and saved with the adapter; peft adds the classifier head to it for SEQ_CLS.
        extra = {"modules_to_save": list(head_extra)} if head_extra else {}
        settings = {**self.hyperparameters, **_targets(model, self.targets, self.hyperparameters.get("target_modules"))}
        config = config_class(task_type=peft.TaskType.SEQ_CLS, **settings, **scheduled, **extra)
        # For SEQ_CLS, peft marks the classifier head as modules_to_save, so it is trained and saved.
        with warnings.catch_warnings(), _no_default_targets(self.name, model):
            # peft reads transformers' deprecated `is_gradient_checkpointing`; nothing for a user to act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            # peft asks every targeted module for in/out features; a LayerNorm (LN tuning) has none, by design.
            warnings.filterwarnings("ignore", message="Unsupported layer type .*Norm", category=UserWarning)
            # GPT-2's linear layers are Conv1D, stored transposed: peft says it transposes them, and does
            warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False", category=UserWarning)
            wrapped = peft.get_peft_model(model, config)
        if config.is_prompt_learning:
            _quiet_prompt_learning()
        if self.after_wrap is not None:
            self.after_wrap(wrapped)
        return wrapped


class _NotPadDetection(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "will not detect padding tokens in `inputs_embeds`" not in record.getMessage()


def _quiet_prompt_learning() -> None:
    """Two messages a prompt-learning run on a decoder would print, both expected and harmless here.
    peft drops the position ids that left padding needs (models.add_positions) for prompt tuning and
    P-tuning, once a step ("Position ids are not supported"), and numbers the virtual tokens with the text;
    and the classifier, fed embeddings, reads the last position, which left padding makes the last real token
    ("will not detect padding tokens in `inputs_embeds`")."""
    warnings.filterwarnings("ignore", message="Position ids are not supported for parameter efficient tuning")
    from transformers.utils import logging as hf_logging

    hf_logging.get_verbosity()  # makes sure transformers' own handler exists; it prints every family's message
    for handler in logging.getLogger("transformers").handlers:
        if not any(isinstance(f, _NotPadDetection) for f in handler.filters):
            handler.addFilter(_NotPadDetection())


def _targets(model: Any, kind: str | None, named: list[str] | None) -> dict[str, Any]:
    """target_modules for this model: the ones named when it has them, else those of `kind` (Method.targets)."""
    if kind is None or (named and any(name.split(".")[-1] in named for name, _ in model.named_modules())):
        return {}
    from peft.utils import constants

    model_type = model.config.model_type
    if kind == "norms":
        known = constants.TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING.get(model_type)
        found = known or _leaf_names(model, lambda module, parent: is_norm(module))
    else:
        known = constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        # e.g. Phi-3's fused qkv_proj, for which peft has no default
        found = known or _leaf_names(model, lambda module, parent: _is_linear(module) and "attention" in type(parent).__name__.lower())
    return {"target_modules": list(found)} if found else {}


def _is_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's linear layers


def _leaf_names(model: Any, chosen: Callable[[Any, Any], bool]) -> list[str]:
    """The distinct last name parts of the modules `chosen(module, parent)` picks, as peft's target_modules."""
    names: list[str] = []
    for parent_name, parent in model.named_modules():
        for name, module in parent.named_children():
            if chosen(module, parent) and not _is_head(model, f"{parent_name}.{name}".lstrip(".")) and name not in names:
                names.append(name)
    return names


@contextmanager
def _no_default_targets(method: str, model: Any) -> Iterator[None]:
    """peft's "Please specify `target_modules`" for a family it has no defaults for, said as what it means."""
    try:
        yield
    except ValueError as exc:
        if "target_modules" not in str(exc):
            raise
        raise UserError(
            f"{method} is not available for {model.config.model_type} models: peft has no default layers to adapt for "
            f"this family and peftbench names none ({first_line(exc)})"
        ) from None


def _is_head(model: Any, name: str) -> bool:
    """The classification head: what peft would put in modules_to_save for SEQ_CLS."""
    return name.startswith(("classifier.", "score.")) or ".classifier." in name


def _in_modules(name: str, modules: tuple[str, ...]) -> bool:
    return any(f"{module}." in f".{name}" for module in modules)


def pooler_modules(model: Any) -> tuple[str, ...]:
    """The pooler's module name where the classifier reads one (BERT-family), as modules_to_save names it."""
    return ("pooler",) if any(name.split(".")[-1] == "pooler" for name, _ in model.named_modules()) else ()


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} registered twice")
    REGISTRY[method.name] = method
    return method


PEFT_DOCS = "peft documentation and examples"
# Rates measured on dev alone: each method's grid on e5-small-offline with seed 0, the test split never read
# (--select-only). The runs are in results/lr-grid-e5-small; tests/test_registry_and_tuned.py checks that
# these figures and the chosen rates are the ones recorded there.
SWEEP_FOLDER = "results/lr-grid-e5-small"
SWEEP_COMMAND = (
    "peftbench run --model e5-small-offline --preset tuned --seeds 0 --max-train-samples 2048 --epochs 1 "
    f"--select-only --out {SWEEP_FOLDER} --methods {{method}} --lr-grid {{grid}}"
)
DEV_SWEEPS: dict[str, dict[float, float]] = {}  # method -> {lr: dev accuracy of the best epoch}


def _rate(rate: float) -> str:
    mantissa, exponent = f"{rate:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def swept(method: str, dev_accuracy: dict[float, float], why: str = "") -> str:
    """An entry's source for a rate chosen by a dev-only sweep: the grid, the dev accuracies and the command."""
    DEV_SWEEPS[method] = dev_accuracy
    grid = ",".join(map(_rate, dev_accuracy))  # as typed in the sweep: the grid's text is part of a run's identity
    shown = ", ".join(f"{_rate(rate)} → {accuracy:.4f}" for rate, accuracy in dev_accuracy.items())
    return f"dev accuracy by lr on e5-small-offline ({shown}){'; ' + why if why else ''}; `{SWEEP_COMMAND.format(method=method, grid=grid)}`"
# The reference's five, with the reference's settings (SPEC.md), in the reference's column order.
register(
    Method(
        "full", "full fine-tuning: every weight of the model is trained", 1e-4,
        source=swept("full", {3e-5: 0.6856, 1e-4: 0.8789, 3e-4: 0.8415}, "SPEC.md gives 2e-5 for BERT-base over thousands of steps"),
    )
)  # fmt: skip
register(
    Method(
        "prefix-tuning", "prefix tuning: trained key/value prefixes in every attention layer", 3e-2,
        "PrefixTuningConfig", {"num_virtual_tokens": 20}, after_wrap=accept_past_key_values,
        source=swept("prefix-tuning", {3e-3: 0.6856, 1e-2: 0.6856, 3e-2: 0.6856}, "all three at the majority class after 32 steps: the tie went to the lowest dev loss"),
    )
)  # fmt: skip
register(
    Method(
        "prompt-tuning", "prompt tuning: trained virtual token embeddings prepended to the input", 3e-2,
        "PromptTuningConfig", {"num_virtual_tokens": 20},
        source=swept("prompt-tuning", {1e-2: 0.6856, 3e-2: 0.6881, 1e-1: 0.6856}, "all three at the majority class after 32 steps; Lester et al. train far longer, at 0.3"),
    )
)  # fmt: skip
register(
    Method(
        "p-tuning", "P-tuning: virtual token embeddings produced by a trained MLP prompt encoder", 1e-1,
        "PromptEncoderConfig", {"num_virtual_tokens": 20, "encoder_hidden_size": 128},
        source=swept("p-tuning", {1e-2: 0.6856, 3e-2: 0.6856, 1e-1: 0.6997}, "SPEC.md: 1e-3; after 32 steps only 1e-1 moved off the majority class, and barely"),
    )
)  # fmt: skip
register(
    Method(
        "lora", "LoRA: trained low-rank updates of the attention projections (peft's default targets)", 3e-3,
        "LoraConfig", {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1}, targets="attention",
        source=swept("lora", {1e-3: 0.6856, 3e-3: 0.8737, 1e-2: 0.8595}, "SPEC.md: 3e-4 up to 1e-3, for longer runs"),
    )
)  # fmt: skip

# Beyond the reference. Sizes divide the widths of BERT-family encoders (32 in the tests, 384, 768, 1024).
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1}
register(
    Method(
        "rslora", "rank-stabilised LoRA: LoRA scaled by alpha/sqrt(r)", 3e-3, "LoraConfig", {**LORA, "use_rslora": True}, targets="attention",
        source=swept("rslora", {3e-4: 0.6856, 1e-3: 0.6856, 3e-3: 0.8737}, "the best rate is the grid's highest: a higher one was not tried"),
    )
)  # fmt: skip
register(Method("dora", "DoRA: LoRA on the direction, plus a trained magnitude per output", 1e-3, "LoraConfig", {**LORA, "use_dora": True}, targets="attention", source=PEFT_DOCS))
register(
    Method(
        "pissa", "PiSSA: LoRA initialised from the principal singular vectors of each weight", 3e-4,
        "LoraConfig", {**LORA, "lora_dropout": 0.0, "init_lora_weights": "pissa_niter_4"}, targets="attention", source="PiSSA paper; peft docs",
    )
)  # fmt: skip
def _adalora_schedule(total_steps: int) -> dict[str, Any]:
    # The AdaLoRA paper's shape: ranks fixed for the first ~10% of steps, pruned towards the budget in the
    # middle, frozen for the last ~20%. Integer steps; a budgeting phase of at least one step.
    tinit, tfinal = total_steps // 10, total_steps // 5
    return {"total_step": max(total_steps, tinit + tfinal + 1), "tinit": tinit, "tfinal": tfinal, "deltaT": max(1, total_steps // 20)}


def _adalora_after_step(model: Any, step: int) -> None:
    model.base_model.update_and_allocate(step)


register(
    Method(
        "adalora", "AdaLoRA: LoRA in SVD form whose rank budget moves to the weights that matter", 3e-3,
        "AdaLoraConfig", {"init_r": 12, "target_r": 8, "lora_alpha": 16, "lora_dropout": 0.1},
        schedule=_adalora_schedule, after_step=_adalora_after_step, targets="attention",
        source="AdaLoRA paper (init_r 12, target_r 8 on GLUE); lr as lora here",
    )
)  # fmt: skip

register(
    Method(
        "ia3", "IA3: trained scaling vectors on keys, values and the feed-forward", 3e-2, "IA3Config", {},
        source=swept("ia3", {3e-3: 0.6856, 1e-2: 0.6856, 3e-2: 0.8853}, "T-Few used 3e-3 over far more steps; the best rate is the grid's highest"),
    )
)  # fmt: skip
register(Method("loha", "LoHa: Hadamard product of two low-rank updates", 1e-3, "LoHaConfig", {"r": 8, "alpha": 16, "target_modules": ["query", "value"]}, targets="attention", source=PEFT_DOCS))
register(Method("lokr", "LoKr: Kronecker-product low-rank updates", 1e-3, "LoKrConfig", {"r": 8, "alpha": 16, "target_modules": ["query", "value"]}, targets="attention", source=PEFT_DOCS))
register(
    Method(
        "vera", "VeRA: shared frozen random low-rank matrices with trained scaling vectors", 6e-2, "VeraConfig",
        {"r": 256, "target_modules": ["query", "value"]}, targets="attention",
        source=swept("vera", {6e-3: 0.6856, 2e-2: 0.6856, 6e-2: 0.8737}, "SPEC.md and the VeRA paper: 2e-2, over more steps; the best rate is the grid's highest"),
    )
)  # fmt: skip
register(
    Method(
        "fourierft", "FourierFT: trained sparse spectral coefficients of each weight update", 5e-2,
        "FourierFTConfig", {"n_frequency": 256, "scaling": 100.0, "target_modules": ["query", "value"]}, targets="attention", source="FourierFT paper (GLUE)",
    )
)  # fmt: skip
register(Method("oft", "OFT: trained block-diagonal orthogonal rotations of the weights", 1e-4, "OFTConfig", {"r": 0, "oft_block_size": 32, "target_modules": ["query", "value"]}, targets="attention", source=PEFT_DOCS))
register(
    Method(
        "boft", "BOFT: orthogonal rotations factored as butterflies", 3e-4,
        "BOFTConfig", {"boft_block_size": 4, "boft_n_butterfly_factor": 1, "target_modules": ["query", "value"]}, targets="attention", source="BOFT paper; peft docs",
    )
)  # fmt: skip
register(Method("hra", "HRA: trained chains of Householder reflections", 1e-3, "HRAConfig", {"r": 8, "target_modules": ["query", "value"]}, targets="attention", source=PEFT_DOCS))
register(Method("miss", "MiSS: trained shards shared across each weight", 1e-3, "MissConfig", {"r": 32, "target_modules": ["query", "value"]}, targets="attention", source=PEFT_DOCS))
register(
    Method(
        "ln-tuning", "LN tuning: only the LayerNorm weights and biases are trained", 3e-3, "LNTuningConfig", {"target_modules": ["LayerNorm"]}, targets="norms",
        source=swept("ln-tuning", {3e-3: 0.6856, 1e-2: 0.6856, 3e-2: 0.6856}, "all three at the majority class after 32 steps: the tie went to the lowest dev loss"),
    )
)  # fmt: skip
register(
    Method(
        "bitfit", "BitFit: only the bias terms are trained (peft has no BitFit: a parameter selection)", 3e-3,
        trainable=lambda name: name.endswith(".bias"),
        source=swept("bitfit", {1e-3: 0.6856, 3e-3: 0.6856, 1e-2: 0.6856}, "BitFit paper: 1e-4..1e-3 over many epochs; all three at the majority class after 32 steps: the tie went to the lowest dev loss"),
    )
)  # fmt: skip

# Shorthands a user can put in --methods.
GROUPS: dict[str, list[str]] = {"seed": ["full", "prefix-tuning", "prompt-tuning", "p-tuning", "lora"], "all": list(REGISTRY)}


def parse_methods(text: str) -> list[str]:
    """Comma-separated method and group names → registry names, in order, without repeats."""
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        expanded = GROUPS.get(item, [item])
        for name in expanded:
            if name not in REGISTRY:
                known = ", ".join(list(REGISTRY) + list(GROUPS))
                raise UserError(f"unknown method {name!r}; known: {known}")
            if name not in names:
                names.append(name)
    if not names:
        raise UserError("--methods names no method")
    return names

"""The registry's machinery: what an entry is (Method), how it turns a freshly loaded classifier into the
model to train, and how --methods names are read. The entries themselves are in entries.py."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from peftbench.errors import UserError, first_line
from peftbench.models.classifier import is_norm


@dataclass(frozen=True, kw_only=True)
class Method:
    """One registry entry, keyword-only: `register(Method(name=..., summary=..., recommended_lr=..., ...))`."""

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
    known: Sequence[str] | None
    found: Sequence[str]
    if kind == "norms":
        known = constants.TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING.get(model_type)
        found = known or _leaf_names(model, lambda module, parent: is_norm(module))
    else:
        known = constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        # e.g. Phi-3's fused qkv_proj, for which peft has no default
        found = known or _leaf_names(
            model, lambda module, parent: _is_linear(module) and "attention" in type(parent).__name__.lower()
        )
    return {"target_modules": list(found)} if found else {}


def _is_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's linear layers


def _leaf_names(model: Any, chosen: Callable[[Any, Any], bool]) -> list[str]:
    """The distinct last name parts of the modules `chosen(module, parent)` picks, as peft's target_modules."""
    names: list[str] = []
    for parent_name, parent in model.named_modules():
        for name, module in parent.named_children():
            if (
                chosen(module, parent)
                and not _is_head(model, f"{parent_name}.{name}".lstrip("."))
                and name not in names
            ):
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


def register(**entry: Any) -> Method:
    """Add an entry, by keyword only (Method's fields): register(name="lora", summary=..., recommended_lr=...)."""
    method = Method(**entry)
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} registered twice")
    REGISTRY[method.name] = method
    return method


SEED_METHODS = ("full", "prefix-tuning", "prompt-tuning", "p-tuning", "lora")  # the reference's five, in its order


def groups() -> dict[str, list[str]]:
    """Shorthands a user can put in --methods."""
    return {"seed": list(SEED_METHODS), "all": list(REGISTRY)}


def parse_methods(text: str) -> list[str]:
    """Comma-separated method and group names → registry names, in order, without repeats."""
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        expanded = groups().get(item, [item])
        for name in expanded:
            if name not in REGISTRY:
                known = ", ".join(list(REGISTRY) + list(groups()))
                raise UserError(f"unknown method {name!r}; known: {known}")
            if name not in names:
                names.append(name)
    if not names:
        raise UserError("--methods names no method")
    return names

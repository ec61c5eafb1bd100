"""The method registry: everything method-specific lives in an entry here, never in the training loop.

An entry says how to turn a freshly loaded classifier into the model to train (a peft config class and
its hyperparameters, or none for full fine-tuning), the learning rate it is usually trained with, and any
hook it needs after wrapping. Adding a method means adding an entry; tests pick it up automatically.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from .compat import accept_past_key_values
from .errors import UserError


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    recommended_lr: float  # what the method is usually trained with (SPEC.md, peft's examples)
    peft_config_class: str | None = None  # name of a class in `peft`; None trains every parameter
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    after_wrap: Callable[[Any], None] | None = None  # fix-ups on the wrapped model, e.g. compat shims

    def build(self, model: Any) -> Any:
        """Wrap (or not) a freshly loaded classifier; the classifier head is always trained."""
        if self.peft_config_class is None:
            model.requires_grad_(True)
            return model
        import peft

        config_class = getattr(peft, self.peft_config_class)
        config = config_class(task_type=peft.TaskType.SEQ_CLS, **self.hyperparameters)
        # For SEQ_CLS, peft marks the classifier head as modules_to_save, so it is trained and saved.
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing`; nothing for a user to act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapped = peft.get_peft_model(model, config)
        if self.after_wrap is not None:
            self.after_wrap(wrapped)
        return wrapped


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} registered twice")
    REGISTRY[method.name] = method
    return method


# The reference's five, with the reference's settings (SPEC.md).
register(Method("full", "full fine-tuning: every weight of the model is trained", recommended_lr=2e-5))
register(
    Method(
        "prefix-tuning",
        "prefix tuning: trained key/value prefixes in every attention layer",
        recommended_lr=1e-2,
        peft_config_class="PrefixTuningConfig",
        hyperparameters={"num_virtual_tokens": 20},
        after_wrap=accept_past_key_values,
    )
)
register(
    Method(
        "prompt-tuning",
        "prompt tuning: trained virtual token embeddings prepended to the input",
        recommended_lr=1e-3,
        peft_config_class="PromptTuningConfig",
        hyperparameters={"num_virtual_tokens": 20},
    )
)
register(
    Method(
        "p-tuning",
        "P-tuning: virtual token embeddings produced by a trained MLP prompt encoder",
        recommended_lr=1e-3,
        peft_config_class="PromptEncoderConfig",
        hyperparameters={"num_virtual_tokens": 20, "encoder_hidden_size": 128},
    )
)
register(
    Method(
        "lora",
        "LoRA: trained low-rank updates of the attention projections (peft's default targets)",
        recommended_lr=3e-4,
        peft_config_class="LoraConfig",
        hyperparameters={"r": 8, "lora_alpha": 16, "lora_dropout": 0.1},
    )
)

# Shorthands a user can put in --methods.
GROUPS: dict[str, list[str]] = {"seed": ["full", "prefix-tuning", "prompt-tuning", "p-tuning", "lora"]}


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

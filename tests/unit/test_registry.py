"""methods/: every entry is keyword-only data that binds to its peft config class, and the sweep provenance of
the registry's rates is a table apart from the entries."""

from __future__ import annotations

import inspect

import peft
import pytest

from peftbench.methods import GROUPS, REGISTRY, Method
from peftbench.methods.registry import SEED_METHODS
from peftbench.methods.sweeps import DEV_SWEEPS


@pytest.mark.parametrize("name", list(REGISTRY))
def test_an_entrys_hyperparameters_are_arguments_of_its_peft_config_class(name: str) -> None:
    method = REGISTRY[name]
    if method.peft_config_class is None:  # full fine-tuning and BitFit select parameters, peft is not involved
        assert not method.hyperparameters and method.schedule is None
        return
    config_class = getattr(peft, method.peft_config_class)
    scheduled = method.schedule(100) if method.schedule is not None else {}
    # a misspelt or removed hyperparameter is a TypeError here, not a failed run in a grid
    inspect.signature(config_class).bind(task_type=peft.TaskType.SEQ_CLS, **method.hyperparameters, **scheduled)


def test_entries_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        Method("x", "y", 1e-3)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        REGISTRY["lora"].recommended_lr = 1.0  # type: ignore[misc]


def test_the_sweeps_are_apart_and_every_swept_entry_cites_its_own() -> None:
    for method, dev in DEV_SWEEPS.items():
        source = REGISTRY[method].source
        assert REGISTRY[method].recommended_lr in dev and f"--methods {method} --lr-grid" in source, method
        assert all(f"{accuracy:.4f}" in source for accuracy in dev.values()), method
    assert list(GROUPS["seed"]) == list(SEED_METHODS) == list(REGISTRY)[:5]

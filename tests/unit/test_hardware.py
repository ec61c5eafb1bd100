"""What `auto` and a chosen setting resolve to, for each execution setting resolved by the device."""

import pytest
import torch

from peftbench.hardware import (
    native_bf16,
    resolve_attention,
    resolve_dropout_masks,
    resolve_precision,
    resolve_split_by_length,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("resolve", "chosen"),
    [
        (resolve_precision, "fp16"),
        (resolve_attention, "sdpa"),
        (resolve_dropout_masks, "bulk"),
        (resolve_split_by_length, "off"),
    ],
)
def test_a_chosen_setting_is_kept(resolve, chosen):
    assert resolve(chosen, CPU) == chosen


@pytest.mark.parametrize(
    ("resolve", "on_a_cpu"),
    [
        (resolve_precision, "bf16" if native_bf16(CPU) else "fp32"),
        (resolve_attention, "eager"),
        (resolve_dropout_masks, "torch"),
        (resolve_split_by_length, "on"),
    ],
)
@pytest.mark.parametrize("requested", [None, "auto"])
def test_auto_and_unset_resolve_by_device(resolve, on_a_cpu, requested):
    assert resolve(requested, CPU) == on_a_cpu

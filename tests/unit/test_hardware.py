"""What `auto` and a chosen setting resolve to, for each execution setting resolved by the device."""

import pytest
import torch

from peftbench import hardware
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
        (resolve_split_by_length, "on"),
    ],
)
@pytest.mark.parametrize("requested", [None, "auto"])
def test_auto_and_unset_resolve_by_device(resolve, on_a_cpu, requested):
    assert resolve(requested, CPU) == on_a_cpu


@pytest.mark.parametrize(
    ("device", "precision", "auto"),
    [("cpu", "fp32", "bulk"), ("cpu", "bf16", "torch"), ("cpu", "fp16", "torch"), ("cuda", "fp32", "torch")],
)
@pytest.mark.parametrize("requested", [None, "auto"])
def test_auto_dropout_masks_are_bulk_only_for_fp32_on_a_cpu(device, precision, auto, requested):
    # bulk masks showed no dev cost in fp32 and cost prompt tuning in bf16 (dropout-stream-e5-small, dropout-e5-small)
    assert resolve_dropout_masks(requested, torch.device(device), precision) == auto


@pytest.mark.parametrize("chosen", ["torch", "bulk"])
def test_chosen_dropout_masks_are_kept(chosen):
    assert resolve_dropout_masks(chosen, CPU, "fp32") == chosen
    assert resolve_dropout_masks(chosen, CPU, "bf16") == chosen


@pytest.mark.parametrize(
    ("native", "precision", "device", "said"),
    [
        (False, "bf16", "auto", True),
        (False, "bf16", "cpu", True),
        (True, "bf16", "cpu", False),
        (False, "fp32", "cpu", False),
        (False, "auto", "cpu", False),
        (False, "bf16", "cuda", False),
    ],
)
def test_bf16_chosen_where_a_cpu_would_emulate_it_is_said(monkeypatch, native, precision, device, said):
    monkeypatch.setattr(hardware, "native_bf16", lambda device: native)
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: False)
    note = hardware.emulated_bf16_note(precision, device)
    assert (note is not None) == said
    assert note is None or "emulated" in note

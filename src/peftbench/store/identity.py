"""What identifies a run's experiment: its protocol (method, settings, data, model), hashed as the run's
fingerprint, and how a stored run's protocol differs from a planned one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from peftbench.config.sections import EXECUTION_FIELDS, NOT_PROTOCOL_FIELDS, DataConfig, TrainConfig
from peftbench.store.schema import RunConfig, RunRecord


def protocol(config: RunConfig, data_sha256: str | None = None, train_cls: type | None = None) -> dict[str, Any]:
    """The experiment a run's config describes, and nothing else: method and its settings, learning rate(s),
    the training protocol, the split and the data's and model's identity.

    How it was executed (precision, batching, kernels: config.EXECUTION_FIELDS), the preset's name, where
    the data lies (--data, --dev-data, --test-data: their bytes' sha256 are) and package versions are not
    part of it. A field missing from an older run's config
    takes the field's default, so a field added later, with a default that does what older versions did,
    leaves older runs valid."""
    data = config.data
    return {
        "model": config.model_identity or {"name": config.model},
        "method": config.method,
        "method_hyperparameters": config.method_hyperparameters,
        "peft_config_class": config.peft_config_class,
        "lr": config.lr,
        # where the bytes lie and how they are decoded are not the experiment: the sha256 pins the bytes
        "data": {
            **_section(DataConfig, data, ("source", "encoding", "dev_data", "test_data")),
            "sha256": data.get("sha256", data_sha256),
            "given_sha256": data.get("given_sha256"),
        },
        "train": _migrated_train(
            _section(train_cls or TrainConfig, config.train, (*EXECUTION_FIELDS, *NOT_PROTOCOL_FIELDS))
        ),
        "select_only": config.select_only,  # a run that never read the test split is another kind
    }


def _section(cls: type, stored: dict[str, Any], leave_out: tuple[str, ...]) -> dict[str, Any]:
    return {f.name: stored.get(f.name, f.default) for f in dataclasses.fields(cls) if f.name not in leave_out}


def _migrated_train(train: dict[str, Any]) -> dict[str, Any]:
    """A train section as this version writes it. lr_grid: runs written before the config was typed hold the
    rates as typed ("1e-3,3e-3"); the experiment is the rates, so both forms give [0.001, 0.003]."""
    rates = train.get("lr_grid")
    if isinstance(rates, str):
        rates = [float(v) for v in rates.split(",") if v.strip()]
    return {**train, "lr_grid": [float(v) for v in rates] if rates is not None else None}


def fingerprint(config: RunConfig) -> str:
    """Short hash of protocol(config): two runs with the same fingerprint are the same experiment."""
    return hashlib.sha256(json.dumps(protocol(config), sort_keys=True).encode()).hexdigest()[:16]


def protocol_differences(record: RunRecord, planned: RunConfig, train_cls: type | None = None) -> list[str]:
    """What differs between a stored run's experiment and a planned one ("train.epochs: 2 → 3"); empty if none.

    A version-1 run named its model only by name: it is then compared by name."""
    stored = protocol(record.config, record.data.sha256, train_cls)
    wanted = protocol(planned, None, train_cls)
    if record.config.model_identity is None:
        wanted["model"] = {"name": planned.model}
    return [f"{key}: {stored_value!r} → {wanted_value!r}" for key, stored_value, wanted_value in _diff(stored, wanted)]


def _diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [(prefix.rstrip("."), old, new)]

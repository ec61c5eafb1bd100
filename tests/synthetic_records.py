"""Run records written by hand for tests of the reports and statistics: the fields a test names, defaults for
the rest, read through the same reader as a run file (so a record a test builds is one the store accepts)."""

from __future__ import annotations

from typing import Any

from peftbench.store.schema import SCHEMA_VERSION, RunRecord, read_record


def synthetic_record(
    method: str, seed: int, config: dict[str, Any] | None = None, data: dict[str, Any] | None = None, **result: Any
) -> RunRecord:
    """A run of `method` at `seed` whose result holds these fields (status "ok" unless given); config and data
    replace the sections' defaults."""
    train = {"seed": seed, "epochs": 1, "batch_size": 8, "warmup_ratio": 0.0}
    asked = {"model": "m", "method": method, "lr": 1e-3, "data": {}, "train": train, **(config or {})}
    return read_record(
        {
            "schema_version": SCHEMA_VERSION,
            "run_id": f"{method}__seed{seed}",
            "config": asked,
            "config_fingerprint": "0" * 16,
            "data": data or {"source": "synthetic"},
            "result": {"status": "ok", **result},
        }
    )

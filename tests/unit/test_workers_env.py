"""execution/workers.py: a worker process imports the very peftbench the grid process runs."""

from __future__ import annotations

import os
from pathlib import Path

import peftbench
from peftbench.execution.workers import child_environment


def test_the_worker_finds_this_peftbench_first_on_its_path() -> None:
    first = Path(child_environment({})["PYTHONPATH"].split(os.pathsep)[0])
    assert (first / "peftbench" / "__init__.py").resolve() == Path(peftbench.__file__).resolve()

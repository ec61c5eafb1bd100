"""execution/workers.py: a worker process imports the very peftbench the grid process runs."""

from __future__ import annotations

import os
from pathlib import Path

import peftbench
from peftbench.execution.workers import child_environment


def test_the_worker_finds_this_peftbench_first_on_its_path() -> None:
    first = Path(child_environment({})["PYTHONPATH"].split(os.pathsep)[0])
    assert (first / "peftbench" / "__init__.py").resolve() == Path(peftbench.__file__).resolve()


def test_workers_on_a_cpu_divide_its_cores_between_them() -> None:
    from peftbench.execution.executors import local_slots
    from peftbench.hardware import CPUS_ENV

    def shown(workers: int, processes: int, cpus: list[int]) -> list[tuple[str, str | None]]:
        return [(s.env["OMP_NUM_THREADS"], s.env.get(CPUS_ENV)) for s in local_slots(workers, "cpu", processes, cpus)]

    assert shown(1, 1, [2, 3]) == [("2", None)]  # one run keeps the cores it was given (taskset)
    assert shown(2, 1, [0, 1, 2, 3, 4]) == [("2", "0,1"), ("2", "2,3")]
    assert shown(2, 2, list(range(8))) == [("2", "0,1,2,3"), ("2", "4,5,6,7")]  # a run's processes together
    assert shown(3, 1, [0, 1]) == [("1", None)] * 3  # more runs than cores: they share them all

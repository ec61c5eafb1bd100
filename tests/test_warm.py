"""Warm start (execution/warm.py): each run's worker forked from a process that has already imported the heavy
libraries, keeping what a cold worker had: its own peak memory, the grid's stdout and stderr of the moment,
and no process left behind when the grid is killed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import processes, worker_children

from peftbench import cli
from peftbench.execution import warm

pytestmark = pytest.mark.skipif(not warm.available(), reason="warm start forks (Linux)")

QUICK = ["--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "16", "--max-length", "32"]


def _grid(tiny_model: Path, out: Path, *extra: str) -> int:
    args = ["run", "--model", str(tiny_model), "--methods", "lora", "--epochs", "1", "--out", str(out), *QUICK]
    return cli.main([*args, *extra])


def _result(out: Path) -> dict:
    return json.loads((out / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]


def test_a_warm_worker_measures_the_peak_memory_a_cold_one_does(tiny_model, tmp_path):
    """Fork leaves a library's code out of the child's page tables, to be faulted in again: unmapped, the tiny
    run's peak read 55 MB warm against 32 MB cold (its code counted as the run's memory). Mapped again
    before measuring (warm.mapped_file_pages), the two agree."""
    assert _grid(tiny_model, tmp_path / "warm", "--no-progress") == 0
    assert _grid(tiny_model, tmp_path / "cold", "--no-progress", "--warm-start", "off") == 0
    hot, cold = _result(tmp_path / "warm"), _result(tmp_path / "cold")
    assert (hot["worker_start"], cold["worker_start"]) == ("warm", "cold")
    assert abs(hot["peak_memory_mb"] - cold["peak_memory_mb"]) <= 0.1 * cold["peak_memory_mb"], (hot, cold)
    assert "- workers: warm start (each worker process forked" in (tmp_path / "warm" / "report.md").read_text()
    assert "- workers: cold start (a fresh interpreter)" in (tmp_path / "cold" / "report.md").read_text()


def _with_stderr(path: Path, grid) -> int:
    saved = os.dup(2)
    try:
        with open(path, "w") as file:
            os.dup2(file.fileno(), 2)
        return grid()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def test_a_worker_writes_to_the_grids_stderr_as_it_is_now(tiny_model, tmp_path):
    """The second grid reuses the warm process the first one started (or an earlier test did): its worker's
    progress bar still goes where this process's stderr goes now, not where it went when the warm process
    started."""
    for name in ("first", "second"):
        log = tmp_path / f"{name}.err"
        assert _with_stderr(log, lambda n=name: _grid(tiny_model, tmp_path / n)) == 0
        assert _result(tmp_path / name)["worker_start"] == "warm"
        assert "[1/1] lora__seed123 epoch 1/1" in log.read_text(encoding="utf-8"), name


def test_the_preloaded_libraries_leave_the_warm_process_safe_to_fork():
    """What the warm process imports starts no thread of its own (jemalloc's, which its fork handlers stop
    and restart, aside) and no CUDA; a computation that starts torch's thread pool is seen."""
    probe = (
        "from peftbench.execution import warm\n"
        "for name in warm.PRELOAD: __import__(name)\n"
        "print(warm.fork_unsafe())\n"
        "import torch; torch.set_num_threads(2); torch.ones(2**22).sum()\n"
        "print(warm.fork_unsafe())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2", **warm.WARM_ONLY}  # as a warm process of a 2-thread slot starts
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()
    assert before == "None"
    assert after.startswith("threads besides its own:"), after


def test_a_warm_worker_gets_the_blas_threads_a_cold_one_would():
    """The warm process loads OpenBLAS (numpy's, scipy's) with one thread, so that it holds no idle pool when
    it forks; the worker sets the count its own environment asks for."""
    probe = (
        "import os, numpy, threadpoolctl\n"
        "from peftbench.execution import warm\n"
        "os.environ.clear(); os.environ.update(OMP_NUM_THREADS='2')  # the worker's own environment\n"
        "warm._blas_threads_as_cold()\n"
        "print(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'}))\n"
    )
    env = {**os.environ, **warm.WARM_ONLY}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[2]"


def test_a_grid_killed_with_sigkill_leaves_no_process_behind(tiny_model, tmp_path):
    """kill -9 of the grid: its warm process sees its socket close and stops its worker, which would die with
    it anyway (parent-death signal); nothing trains on for a run nobody will record."""
    command = [sys.executable, "-m", "peftbench.cli", "run", "--model", str(tiny_model), "--out", str(tmp_path)]
    command += ["--methods", "lora", "--epochs", "1000", "--no-progress", *QUICK]
    grid = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + 120, []
    while not workers and time.monotonic() < deadline and grid.poll() is None:
        workers = worker_children(grid.pid)
        time.sleep(0.05)
    assert workers, "no worker started"
    table = processes()
    children = [pid for pid, (ppid, _) in table.items() if ppid == grid.pid]
    # one warm process: the one the cli started before its own imports is the one its worker was forked from
    assert len([pid for pid in children if "peftbench.execution.warm" in table[pid][1]]) == 1, children
    started = children + workers
    grid.send_signal(signal.SIGKILL)
    grid.wait()
    deadline = time.monotonic() + 10  # its 1,000 epochs would take minutes
    while time.monotonic() < deadline and _living(started):
        time.sleep(0.1)
    assert not _living(started), [processes().get(pid) for pid in _living(started)]


def _living(pids: list[int]) -> list[int]:
    """Those still running (a zombie waiting for whoever adopted it to reap it runs no more)."""
    living = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            living.append(pid)
    return living


def test_the_cli_prestarts_the_warm_process_its_first_worker_is_forked_from(tiny_model, tmp_path, monkeypatch):
    """Started before the grid process imports transformers and peft (so that on two cores both import at
    once), with the very environment the first run's worker then asks for."""
    prestarted, asked = [], []
    taken = warm.take
    monkeypatch.setattr(warm, "prestart", prestarted.append)  # recorded, none started: the worker starts one
    monkeypatch.setattr(warm, "take", lambda env: asked.append(env) or taken(env))
    assert _grid(tiny_model, tmp_path, "--no-progress") == 0
    assert len(prestarted) == 1 and asked
    assert warm._key(prestarted[0]) == warm._key(asked[0])

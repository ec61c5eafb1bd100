"""A grid stopped while one of its workers is still being started (a warm process's first worker waits for its
imports, seconds): that worker is stopped as soon as it exists, instead of training its whole run while the grid
waits at exit for the thread that started it."""

import signal
import subprocess
import sys
import time

from peftbench.execution import workers


def test_a_worker_started_after_the_grid_was_stopped_is_stopped_at_once():
    def started_meanwhile():
        workers.stop_all_workers()  # Ctrl-C arrives while the worker is being started
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        return child, "cold"

    began = time.monotonic()
    child, _ = workers._registered(started_meanwhile)
    try:
        assert child.wait(timeout=30) == -signal.SIGTERM
    finally:
        child.kill()
    assert time.monotonic() - began < 30

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
    child, _ = workers._registered(started_meanwhile, None)
    try:
        assert child.wait(timeout=30) == -signal.SIGTERM
    finally:
        child.kill()
    assert time.monotonic() - began < 30


def test_a_stop_while_the_warm_process_imports_ends_that_process():
    """Else the thread starting the worker would wait for its imports (seconds) while the grid exits, and a
    second Ctrl-C in that time would print a traceback."""
    import types

    killed = []
    process = types.SimpleNamespace(popen=types.SimpleNamespace(kill=lambda: killed.append(True)))

    def stopped_while_importing():
        workers.stop_all_workers()
        assert killed, "the warm process it waited for was not ended"
        child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
        return child, "cold: the warm process ended"

    child, _ = workers._registered(stopped_while_importing, process)
    child.wait(timeout=30)


def test_a_stop_inside_a_finalizer_ends_the_worker_without_a_traceback(tmp_path):
    """CI saw it: the grid's SIGTERM reached a warm worker inside a regex object's __del__, and Python printed
    the ignored exception's traceback on the grid's terminal."""
    probe = (
        "import sys\n"
        "from peftbench.interrupts import Interrupted\n"
        "from peftbench.run import worker\n"
        "sys.unraisablehook = worker._stop_inside_a_finalizer\n"
        "class Finalized:\n"
        "    def __del__(self):\n"
        "        raise Interrupted(15)\n"
        "Finalized()\n"
        "print('went on')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 143 and "went on" not in done.stdout
    assert "Traceback" not in done.stderr, done.stderr

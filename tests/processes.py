"""The process table as the tests that kill workers read it (Linux /proc)."""

from __future__ import annotations

from pathlib import Path


def processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found[int(entry.name)] = (parent, (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (OSError, ValueError):
                continue  # ended while the table was read
    return found


def worker_children(parent: int) -> list[int]:
    """The peftbench worker processes started for `parent`: its children running peftbench.run.worker (cold
    start), and the children of its warm processes, which fork its workers (warm start, execution/warm.py)."""
    table = processes()
    children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
    cold = [pid for pid in children if "peftbench.run.worker" in table[pid][1]]
    warm = {pid for pid in children if "peftbench.execution.warm" in table[pid][1]}
    return cold + [pid for pid, (ppid, _) in table.items() if ppid in warm]

"""Claims: which process is training which run of an output folder, so that processes sharing one `--out`
(two identical commands, the shards of a job array, two machines on a shared disk) never train a run twice
and never mix settings.

DIR/claims/<run_id>.json holds the claimant's host, its namespace (boot and PID namespace: two containers of
one hostname tell their pids apart by it), pid, start time and the run's config fingerprint. It is created
with O_EXCL; while the run trains, the claimant touches it every HEARTBEAT_S seconds. A claim whose heartbeat
is older than the timeout, or whose process is gone (same host and namespace: otherwise its pid says nothing
here, and it counts as alive until the timeout), is stale and may be taken over. Taking over and creating go
through one lock on DIR/claims/.lock (fcntl.flock: local disks and NFS; opened read-only, so a lock file
another user created serves too), so two processes cannot both take over the same stale claim.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from peftbench.errors import UserError

HEARTBEAT_S = 20.0  # how often a live claimant touches its claims
DEFAULT_TIMEOUT_S = 300.0  # a claim untouched this long belongs to a process that died (or a machine that did)
HOST = socket.gethostname()


def _namespace() -> str:
    """This boot of this machine and this PID namespace, in 8 characters: a pid means something only there."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        boot = ""
    try:
        pids = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pids = ""
    return hashlib.sha256(f"{boot}:{pids}".encode()).hexdigest()[:8]


NAMESPACE = _namespace()
OWNER = f"{HOST}-{NAMESPACE}"  # whose pids this process can check


@dataclass
class Claim:
    run_id: str
    path: Path
    holder: dict[str, Any]  # what is in the file


class ClaimBook:
    """The claims this process holds in one output folder, kept alive by a heartbeat thread."""

    def __init__(self, out: Path, timeout_s: float = DEFAULT_TIMEOUT_S, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.folder = self.folder_of(out)
        self.timeout_s, self.heartbeat_s = timeout_s, heartbeat_s
        self.held: dict[str, Claim] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @staticmethod
    def folder_of(out: Path) -> Path:
        return out / "claims"

    def claim(self, run_id: str, fingerprint: str) -> dict[str, Any] | None:
        """Claim a run: None when it is now ours, else the live holder's record (host, pid, started).

        A live claim of the same run with another fingerprint means another process is writing this folder
        with other settings: that is refused, before anything is trained."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{run_id}.json"
        with self._folder_lock():
            holder = _read(path)
            if holder is not None and not self._stale(path, holder):
                if holder.get("fingerprint") != fingerprint:
                    raise UserError(
                        f"{self.folder.parent} is being written with other settings by pid {holder.get('pid')} on "
                        f"{holder.get('host')} (run {run_id}); use another --out or wait for it to finish"
                    )
                return holder
            path.unlink(missing_ok=True)  # absent, unreadable or stale: ours now
            mine = {
                "run_id": run_id,
                "fingerprint": fingerprint,
                "host": HOST,
                "namespace": NAMESPACE,
                "pid": os.getpid(),
                "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(mine, handle)
        with self._guard:
            self.held[run_id] = Claim(run_id, path, mine)
        self._start_heartbeat()
        return None

    def release(self, run_id: str) -> None:
        with self._guard:
            claim = self.held.pop(run_id, None)
        if claim is not None:
            with self._folder_lock():
                if _read(claim.path) == claim.holder:  # never remove a claim that another process took over
                    claim.path.unlink(missing_ok=True)

    def release_all(self) -> None:
        for run_id in list(self.held):
            self.release(run_id)
        self._stop.set()

    def _stale(self, path: Path, holder: dict[str, Any]) -> bool:
        checkable = holder.get("host") == HOST and holder.get("namespace") == NAMESPACE
        if checkable and not _alive(holder.get("pid")):
            return True  # its process is gone: no need to wait for the timeout
        try:
            return time.time() - path.stat().st_mtime > self.timeout_s
        except FileNotFoundError:
            return True

    def exclusive(self) -> Any:
        """Hold the folder's claims lock: what must not interleave with another process sharing --out."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self._folder_lock()

    @contextmanager
    def _folder_lock(self) -> Iterator[None]:
        path = self.folder / ".lock"
        try:  # read-only: flock needs no more, and another user's lock file (mode 0644) opens so too
            # O_NOFOLLOW: a link under the lock's name must not make it create or lock a file elsewhere
            descriptor = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise UserError(f"cannot open the claims lock {path}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL):
                    raise UserError(
                        f"the file system of {self.folder.parent} has no file locks (flock: {exc.strerror}), which "
                        "processes sharing an --out need; give an --out on a disk that has them"
                    ) from None
                raise
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)

    def _start_heartbeat(self) -> None:
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, name="peftbench-claims", daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._guard:
                paths = [claim.path for claim in self.held.values()]
            for path in paths:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass  # released meanwhile


def _read(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent, or torn by a crash between create and write: treated as no claim
    return holder if isinstance(holder, dict) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def owner_prefix() -> str:
    """Names scratch folders by their process (`.work-<host>-<namespace>-<pid>-…`), so a later grid can tell
    those left by a process that was killed (kill -9 runs no cleanup) from those of a grid still running."""
    return f"{OWNER}-{os.getpid()}-"


def left_by_dead_process(name: str, prefix: str) -> bool:
    """Whether a folder named `<prefix><host>-<namespace>-<pid>-…` belongs to a process that is gone, of this
    host and namespace; one whose owner cannot be checked here (another container, an older name) is kept."""
    parts = name[len(prefix) :].rsplit("-", 3)
    if not name.startswith(prefix) or len(parts) != 4 or not parts[2].isdigit():
        return False
    return f"{parts[0]}-{parts[1]}" == OWNER and not _alive(int(parts[2]))

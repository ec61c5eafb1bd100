"""execution/claims.py: a run is claimed by one process at a time; a claim of a dead process, or one not
refreshed within the timeout, is taken over; a claim of other settings is refused."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peftbench.errors import UserError
from peftbench.execution import claims
from peftbench.execution.claims import HOST, NAMESPACE, OWNER, ClaimBook, left_by_dead_process, owner_prefix


def _dead_pid() -> int:
    return int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )


def test_a_live_claim_is_left_to_its_holder_and_other_settings_are_refused(tmp_path: Path) -> None:
    book, other = ClaimBook(tmp_path, timeout_s=60), ClaimBook(tmp_path, timeout_s=60)
    assert book.claim("lora__seed1", "abc") is None
    assert other.claim("lora__seed1", "abc")["pid"] == os.getpid()  # type: ignore[index]
    with pytest.raises(UserError, match="other settings"):
        other.claim("lora__seed1", "xyz")
    book.release_all()
    other.release_all()
    assert not list((tmp_path / "claims").glob("*.json"))


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    (tmp_path / "claims").mkdir()
    path = tmp_path / "claims" / "full__seed1.json"
    dead = {"run_id": "full__seed1", "fingerprint": "abc", "host": HOST, "namespace": NAMESPACE, "pid": _dead_pid()}
    path.write_text(json.dumps(dead))
    book = ClaimBook(tmp_path, timeout_s=60)
    assert book.claim("full__seed1", "abc") is None
    assert json.loads(path.read_text())["pid"] == os.getpid()
    book.release_all()


def test_a_claim_of_another_pid_namespace_on_this_hostname_waits_for_its_heartbeat(tmp_path: Path) -> None:
    """Two containers of one hostname: the other's pid is not ours to check, so its claim stands until the timeout."""
    (tmp_path / "claims").mkdir()
    path = tmp_path / "claims" / "full__seed1.json"
    for namespace in ("0ther000", None):  # another container's; an older claim that did not say
        held = {"run_id": "full__seed1", "fingerprint": "abc", "host": HOST, "pid": _dead_pid()}
        path.write_text(json.dumps({**held, **({"namespace": namespace} if namespace else {})}))
        book = ClaimBook(tmp_path, timeout_s=60)
        assert book.claim("full__seed1", "abc") is not None  # left to it
    old = time.time() - 120
    os.utime(path, (old, old))
    assert book.claim("full__seed1", "abc") is None
    book.release_all()


def test_a_lock_file_of_another_user_serves_and_a_file_system_without_locks_is_one_line(tmp_path, monkeypatch) -> None:
    (tmp_path / "claims").mkdir()
    lock = tmp_path / "claims" / ".lock"
    lock.write_text("")
    lock.chmod(0o444)  # as another user's 0644 file is to this one (root opens it whatever its mode)
    book = ClaimBook(tmp_path, timeout_s=60)
    assert book.claim("lora__seed1", "abc") is None
    book.release_all()

    def no_locks(descriptor, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(claims.fcntl, "flock", no_locks)
    with pytest.raises(UserError, match="has no file locks"):
        ClaimBook(tmp_path, timeout_s=60).claim("lora__seed2", "abc")


def test_a_claim_untouched_past_the_timeout_is_stale_whoever_holds_it(tmp_path: Path) -> None:
    (tmp_path / "claims").mkdir()
    path = tmp_path / "claims" / "ia3__seed1.json"
    path.write_text(json.dumps({"run_id": "ia3__seed1", "fingerprint": "abc", "host": "elsewhere", "pid": 1}))
    book = ClaimBook(tmp_path, timeout_s=60)
    assert book.claim("ia3__seed1", "abc")["host"] == "elsewhere"  # type: ignore[index]
    old = time.time() - 120
    os.utime(path, (old, old))
    assert book.claim("ia3__seed1", "abc") is None
    book.release_all()


def test_a_released_claim_taken_over_meanwhile_is_not_removed(tmp_path: Path) -> None:
    book = ClaimBook(tmp_path, timeout_s=60)
    assert book.claim("lora__seed2", "abc") is None
    path = tmp_path / "claims" / "lora__seed2.json"
    path.write_text(json.dumps({"run_id": "lora__seed2", "fingerprint": "abc", "host": "elsewhere", "pid": 7}))
    book.release("lora__seed2")
    assert path.exists()  # another process's now


def test_scratch_folders_name_their_process() -> None:
    mine = f".work-{owner_prefix()}abc"
    assert not left_by_dead_process(mine, ".work-")
    assert left_by_dead_process(f".work-{OWNER}-{_dead_pid()}-abc", ".work-")
    assert not left_by_dead_process(f".work-elsewhere-{NAMESPACE}-{_dead_pid()}-abc", ".work-")  # another host
    assert not left_by_dead_process(f".work-{HOST}-0ther000-{_dead_pid()}-abc", ".work-")  # another container
    assert not left_by_dead_process(f".work-{HOST}-{_dead_pid()}-abc", ".work-")  # an older name: cannot tell
    assert not left_by_dead_process(".work-garbage", ".work-")

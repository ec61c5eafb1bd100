"""Faults and bad data: each ends in one line (a warning, or an error with exit 2), loses no finished run, and
leaves nothing that a rerun trips over. The two races on one --out (other settings, identical commands)
are in test_scale.py."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import worker_children

from peftbench import cli
from peftbench.config.sections import DataConfig
from peftbench.data import load_labeled_texts
from peftbench.errors import UserError
from peftbench.execution.claims import OWNER

QUICK = [
    "--max-train-samples",
    "64",
    "--max-eval-samples",
    "32",
    "--batch-size",
    "16",
    "--max-length",
    "32",
    "--no-progress",
    "--epochs",
    "1",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
REVIEWS = [
    "房间很干净，服务好",
    "太差了，不会再来",
    "位置方便，早餐不错",
    "隔音很差，床也脏",
    "性价比高，推荐",
    "前台态度恶劣",
]


def _run(tiny_model: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--model", str(tiny_model), "--out", str(out), *QUICK, *extra]


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory) -> Path:
    """A folder with two finished runs (lora, full), their weights and reports."""
    out = tmp_path_factory.mktemp("finished")
    assert cli.main(_run(tiny_model, out, "--methods", "lora,full", "--workers", "inline")) == 0
    return out


def _copy(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / "out")
    return tmp_path / "out"


# --- labels and encodings ------------------------------------------------------------------------------


def test_a_nan_label_in_csv_and_a_null_in_jsonl_are_missing_labels(tmp_path, capsys):
    csv = tmp_path / "nan.csv"
    csv.write_text("label,review\n1,好\n0,差\nNaN,一般\n", encoding="utf-8")
    jsonl = tmp_path / "null.jsonl"
    jsonl.write_text(
        '{"label": 1, "review": "好"}\n{"label": 0, "review": "差"}\n{"label": null, "review": "一般"}\n',
        encoding="utf-8",
    )
    for path in (csv, jsonl):
        with pytest.raises(UserError, match="1 row\\(s\\) have a missing label"):
            load_labeled_texts(DataConfig(source=str(path)))
    code = cli.main(
        ["run", "--model", "unused", "--data", str(csv), "--methods", "lora", "--out", str(tmp_path / "out")]
    )
    assert code == 2 and "missing label" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_jsonl_float_labels_read_as_integers(tmp_path):
    jsonl = tmp_path / "floats.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"label": float(i % 2), "review": text}) + "\n" for i, text in enumerate(REVIEWS)),
        encoding="utf-8",
    )
    data = load_labeled_texts(DataConfig(source=str(jsonl)))
    assert data.label_names == ["0", "1"] and data.labels == [0, 1, 0, 1, 0, 1]


def test_a_gbk_file_runs_end_to_end_and_says_its_encoding(tiny_model, tmp_path):
    source = tmp_path / "gbk.csv"
    rows = [f"{i % 2},{REVIEWS[i % len(REVIEWS)]}{i}" for i in range(80)]
    source.write_bytes(("label,review\n" + "\n".join(rows) + "\n").encode("gbk"))
    assert (
        cli.main(
            _run(tiny_model, tmp_path / "out", "--data", str(source), "--methods", "bitfit", "--workers", "inline")
        )
        == 0
    )
    record = json.loads((tmp_path / "out" / "runs" / "bitfit__seed123.json").read_text(encoding="utf-8"))
    assert record["data"]["encoding"] == "gb18030" and record["data"]["rows_read"] == 80
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert (
        "(read as gb18030)" in report
        and f"truncates {record['data']['truncated_share']['train']:.1%} of train" in report
    )


def test_an_undecodable_file_names_its_line_and_the_option(tmp_path, capsys):
    source = tmp_path / "broken.csv"
    source.write_bytes(b"label,review\n1,fine\n0,\xff\xfe\xff\n")
    code = cli.main(
        ["run", "--model", "unused", "--data", str(source), "--methods", "lora", "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "line 3" in err and "--encoding" in err
    with pytest.raises(UserError, match="unknown --encoding"):
        load_labeled_texts(DataConfig(source=str(source), encoding="no-such-codec"))


# --- run files that cannot be read ---------------------------------------------------------------------


CORRUPT = {"truncated": None, "empty": b"", "random": os.urandom(64) + b"\xff", "null": b"null", "list": b"[1, 2]"}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_an_unreadable_run_file_is_named_moved_aside_and_trained_again(finished, tiny_model, tmp_path, kind, capsys):
    out = _copy(finished, tmp_path)
    path = out / "runs" / "lora__seed123.json"
    content = CORRUPT[kind]
    path.write_bytes(path.read_bytes()[:100] if content is None else content)
    assert cli.main(["report", str(out)]) == 0  # a report only reads: it says so and moves nothing
    warning = [line for line in capsys.readouterr().err.splitlines() if "unreadable" in line]
    assert len(warning) == 1 and "lora__seed123.json" in warning[0] and "(reports only read)" in warning[0]
    assert path.exists() and not (out / "runs" / "corrupt").exists()
    assert cli.main(_run(tiny_model, out, "--methods", "lora,full", "--workers", "inline")) == 0
    captured = capsys.readouterr()
    assert "moved to runs/corrupt/lora__seed123.json" in captured.err and "rerun trains it again" in captured.err
    assert (out / "runs" / "corrupt" / "lora__seed123.json").exists()
    assert "1 run(s) done, 1 skipped" in captured.out
    assert json.loads(path.read_text(encoding="utf-8"))["result"]["status"] in ("ok", "collapsed")


# --- leftovers of killed processes, file modes ---------------------------------------------------------


def test_a_rerun_removes_what_killed_processes_left(finished, tiny_model, tmp_path):
    out = _copy(finished, tmp_path)
    old = time.time() - 3600
    orphan = out / "runs" / ".lora__seed123.json.x1y2z3w4.tmp"
    orphan.write_text('{"half', encoding="utf-8")
    os.utime(orphan, (old, old))
    fresh = out / "runs" / ".full__seed123.json.a1b2c3d4.tmp"  # could be another process's write under way
    fresh.write_text("{", encoding="utf-8")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    work = out / f".work-{OWNER}-{dead}-abc123"
    (work / "lora__seed123" / "weights").mkdir(parents=True)
    alive = out / f".work-{OWNER}-{os.getpid()}-def456"
    alive.mkdir()
    assert cli.main(_run(tiny_model, out, "--methods", "lora,full", "--workers", "inline")) == 0
    assert not orphan.exists() and not work.exists()
    assert fresh.exists() and alive.exists()


def test_saved_weights_are_ordinary_files_of_the_umask(finished):
    umask = os.umask(0)
    os.umask(umask)
    for run in ("full__seed123", "lora__seed123"):
        files = [p for p in (finished / run).rglob("*") if p.is_file()]
        assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~umask}, run
        assert stat.S_IMODE((finished / run).stat().st_mode) == 0o777 & ~umask


# --- predict -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("not json", "cannot read"),
        ('{"method": "lora", "base_model": "m", "max_length": 32}', "label_names must be a list"),
        ("[1, 2]", "is not a saved run's description"),
        ("no tokenizer", "cannot load the tokenizer saved in"),
    ],
)
def test_predict_on_a_damaged_run_folder_is_one_line(finished, tmp_path, capsys, damage, said):
    """Issue 25 row 16: a malformed peftbench-run.json, or a run folder without its tokenizer files."""
    run = _copy(finished, tmp_path) / "lora__seed123"
    if damage == "no tokenizer":
        for path in run.iterdir():
            if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
                path.unlink()
    else:
        (run / "peftbench-run.json").write_text(damage, encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["predict", "--run", str(run), "房间很干净"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("peftbench: error:")]
    assert len(errors) == 1 and said in errors[0] and "Traceback" not in err, err


def test_predict_warns_on_a_collapsed_run(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    record_path = out / "runs" / "lora__seed123.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    for status in ("collapsed", "ok"):
        record["result"]["status"] = status
        record_path.write_text(json.dumps(record), encoding="utf-8")
        capsys.readouterr()
        assert cli.main(["predict", "--run", str(out / "lora__seed123"), "房间很干净"]) == 0
        captured = capsys.readouterr()
        assert ("is collapsed" in captured.err) == (status == "collapsed") and len(
            captured.out.strip().splitlines()
        ) == 1


def test_predict_prints_the_data_s_label_names(tiny_model, tmp_path, capsys):
    source = tmp_path / "named.jsonl"
    names = ["negative", "positive"]
    source.write_text(
        "".join(json.dumps({"label": names[i % 2], "review": f"{REVIEWS[i % 6]}{i}"}) + "\n" for i in range(80)),
        encoding="utf-8",
    )
    assert (
        cli.main(
            _run(tiny_model, tmp_path / "out", "--data", str(source), "--methods", "bitfit", "--workers", "inline")
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["predict", "--run", str(tmp_path / "out" / "bitfit__seed123"), "房间很干净", "太差了"]) == 0
    assert {line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()} <= set(names)


# --- a full disk ---------------------------------------------------------------------------------------


def test_too_little_space_stops_before_training_and_keeps_finished_runs(
    finished, tiny_model, tmp_path, monkeypatch, capsys
):
    out = _copy(finished, tmp_path)
    from peftbench.runner import scheduling

    usage = shutil.disk_usage(out)
    monkeypatch.setattr(scheduling.shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    code = cli.main(_run(tiny_model, out, "--methods", "lora,full,bitfit", "--workers", "inline"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "not enough free space" in err[-1] and "bitfit__seed123" in err[-1]
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == ["full__seed123.json", "lora__seed123.json"]
    assert not (out / "bitfit__seed123").exists() and not list(out.glob(".work-*"))


def _small_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_a_full_disk_is_one_line_and_leaves_no_torn_folder(finished, tiny_model, tmp_path):
    disk = tmp_path / "disk"
    if not _small_tmpfs(disk, "2m"):
        pytest.skip("needs root and tmpfs to mount a small file system")
    try:
        command = [
            sys.executable,
            "-m",
            "peftbench.cli",
            "run",
            "--model",
            str(tiny_model),
            "--out",
            str(disk / "out"),
            *QUICK,
            "--methods",
            "lora",
        ]
        done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "not enough free space" in done.stderr.strip().splitlines()[-1]
        assert not list((disk / "out").glob(".work-*")) and not (disk / "out" / "lora__seed123").exists()
        # a folder whose disk is full: `report` cannot write its tables, and says so in one line
        shutil.copytree(finished / "runs", disk / "full" / "runs")
        filler = disk / "filler"
        with open(filler, "wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
            except OSError:
                pass
        done = subprocess.run(
            [sys.executable, "-m", "peftbench.cli", "report", str(disk / "full")],
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, (
            done.stderr
        )
        assert "No space left on device" in done.stderr
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# --- signals -------------------------------------------------------------------------------------------


def _worker_started(grid: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline and grid.poll() is None:
        if worker_children(grid.pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker process through /proc (Linux)")
def test_ctrl_c_twice_prints_the_message_only(tiny_model, tmp_path):
    command = [
        sys.executable,
        "-m",
        "peftbench.cli",
        "run",
        "--model",
        str(tiny_model),
        "--out",
        str(tmp_path),
        *QUICK,
        "--methods",
        "lora,bitfit",
    ]
    grid = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    assert _worker_started(grid, time.monotonic() + 120)
    time.sleep(1.0)
    for _ in range(2):  # what a terminal does: SIGINT to the whole foreground group, grid and worker alike
        os.killpg(grid.pid, signal.SIGINT)
        time.sleep(0.2)
    out, err = grid.communicate(timeout=120)
    assert grid.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("peftbench: stopped by SIGINT")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker process through /proc (Linux)")
def test_sigterm_is_handled_like_ctrl_c_and_keeps_finished_runs(tiny_model, tmp_path):
    command = [
        sys.executable,
        "-m",
        "peftbench.cli",
        "run",
        "--model",
        str(tiny_model),
        "--out",
        str(tmp_path),
        *QUICK,
        "--methods",
        "bitfit,lora,ia3",
        "--max-train-samples",
        "1024",
    ]
    grid = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "runs").glob("*.json")) and time.monotonic() < deadline and grid.poll() is None:
        time.sleep(0.1)
    assert _worker_started(grid, deadline)  # the second run is under way
    grid.send_signal(signal.SIGTERM)
    out, err = grid.communicate(timeout=120)
    assert grid.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("peftbench: stopped by SIGTERM")
    kept = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert kept and not list((tmp_path / "failed").glob("*.json"))  # the stopped run is not recorded as failed
    # the rerun of the finished ones skips them (training the others again would only cost time here)
    finished = ",".join(name.split("__")[0] for name in kept)
    again = subprocess.run([*command, "--methods", finished], env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"{len(kept)} run(s) already finished" in again.stderr, again.stderr[-2000:]
    assert "started" not in again.stderr

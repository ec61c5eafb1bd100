"""Hostile folders, shared machines and crafted files (issue 25): nothing runs that should not, nothing of anyone
else's is touched, and every refusal is one line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from peftbench import cli, grid
from peftbench.errors import UserError
from peftbench.store.runs import ResultStore

QUICK = ["--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "16", "--max-length", "32"]


def _run(tiny_model: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--model", str(tiny_model), "--out", str(out), "--no-progress", "--epochs", "1", *QUICK, *extra]


def test_code_in_the_working_directory_never_runs_in_a_worker(tiny_model, tmp_path, monkeypatch):
    where = tmp_path / "where-the-command-is-typed"
    (where / "peftbench").mkdir(parents=True)
    marker = tmp_path / "ran"
    planted = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\nraise SystemExit(3)\n"
    for name in ("json.py", "torch.py", "peftbench/__init__.py"):
        (where / name).write_text(planted, encoding="utf-8")
    monkeypatch.chdir(where)
    assert cli.main(_run(tiny_model, Path("out"), "--methods", "bitfit", "--dry-run")) == 0
    assert not marker.exists()
    record = json.loads((where / "out" / "runs" / "bitfit__seed123.json").read_text(encoding="utf-8"))
    assert record["result"]["status"] == "dry_run" and record["result"]["trainable_params"] > 0


def _old(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x", encoding="utf-8")
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    return path


def test_the_sweep_takes_only_the_store_s_own_temporary_files(tmp_path, monkeypatch):
    theirs = [_old(tmp_path / ".draft.tmp"), _old(tmp_path / ".notes.txt.abcd1234.tmp"), _old(tmp_path / ".x.tmp")]
    ours = [_old(tmp_path / ".report.md.k2j4_x9a.tmp"), _old(tmp_path / "runs" / ".lora__seed1.json.a1b2c3d4.tmp")]
    assert ResultStore(tmp_path).remove_stale_temporary_files() == 2
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)
    refused = _old(tmp_path / ".results.csv.zzzzzzzz.tmp")

    def not_allowed(self, missing_ok=False):
        raise PermissionError(13, "Operation not permitted")

    monkeypatch.setattr(Path, "unlink", not_allowed)  # another user's file in a sticky folder
    assert ResultStore(tmp_path).remove_stale_temporary_files() == 0 and refused.exists()


FIXTURE = Path(__file__).parent / "fixtures" / "schema1" / "lora__seed123.json"


def _crafted_runs(folder: Path, elsewhere: Path) -> dict[str, Path]:
    """A results folder with one good run and run files that are none: deep, huge, incomplete, links."""
    runs = folder / "runs"
    runs.mkdir(parents=True)
    (runs / "lora__seed123.json").write_bytes(FIXTURE.read_bytes())
    missing_train = json.loads(FIXTURE.read_text(encoding="utf-8"))
    del missing_train["config"]["train"]
    elsewhere.mkdir()
    (elsewhere / "theirs.json").write_bytes(FIXTURE.read_bytes())
    crafted = {
        "deep": "[" * 100_000 + "]" * 100_000,
        "huge": '{"schema_version": ' + "9" * 5000 + "}",
        "no-train": json.dumps(missing_train),
    }
    for name, text in crafted.items():
        (runs / f"{name}.json").write_text(text, encoding="utf-8")
    (runs / "folder-link.json").symlink_to(elsewhere, target_is_directory=True)
    (runs / "file-link.json").symlink_to(elsewhere / "theirs.json")
    return {path.name: path for path in runs.iterdir()}


def test_report_and_compare_only_read_crafted_run_files_and_say_each_in_one_line(tmp_path, capsys):
    folder = tmp_path / "results"
    before = _crafted_runs(folder, tmp_path / "elsewhere")
    assert cli.main(["report", str(folder)]) == 0
    assert cli.main(["compare", str(folder), "--out", str(tmp_path / "compared")]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2 * 5 and all("is unreadable" in line and "left in place" in line for line in warnings)
    assert {p.name: p for p in (folder / "runs").iterdir()} == before  # nothing moved, no corrupt/ folder
    assert (tmp_path / "elsewhere" / "theirs.json").exists()
    assert "lora" in (folder / "report.md").read_text(encoding="utf-8")


def test_a_run_sets_crafted_files_aside_but_never_through_a_linked_folder(tmp_path, capsys):
    folder = tmp_path / "results"
    _crafted_runs(folder, tmp_path / "elsewhere")
    assert [r.run_id for r in ResultStore(folder).records()] == ["lora__seed123"]
    aside = sorted(p.name for p in (folder / "runs" / "corrupt").iterdir())
    assert aside == ["deep.json", "file-link.json", "folder-link.json", "huge.json", "no-train.json"]
    assert (tmp_path / "elsewhere" / "theirs.json").exists()  # the links were moved, not what they point to
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "runs").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "bad.json").write_text("{", encoding="utf-8")
    capsys.readouterr()
    ResultStore(linked).records()
    assert (tmp_path / "elsewhere" / "bad.json").exists() and not (tmp_path / "elsewhere" / "corrupt").exists()
    assert "left in place (its folder is a symbolic link)" in capsys.readouterr().err


def test_labels_that_look_like_digits_are_names(tmp_path):
    from peftbench.config.sections import DataConfig
    from peftbench.data import load_labeled_texts

    path = tmp_path / "circled.csv"
    labels = ["①", "②", "١", "10", "2"]
    path.write_text("review,label\n" + "".join(f"评论{i},{labels[i % 5]}\n" for i in range(20)), encoding="utf-8")
    data = load_labeled_texts(DataConfig(source=str(path)))
    assert data.label_names == ["2", "10", "١", "①", "②"]  # numbers in order first, then the names
    assert data.labels[:5] == [3, 4, 2, 1, 0]


def test_plot_labels_are_plain_text_not_tex(tmp_path):
    from synthetic_records import synthetic_record

    from peftbench.reporting.html import render_html
    from peftbench.reporting.markdown import header_lines

    epochs = [{"epoch": 1, "eval_loss": 0.6, "accuracy": 0.7, "f1_macro": 0.6}]
    common = {"trainable_params": 10, "train_time_min": 1.0, "peak_memory_mb": 50.0, "epochs": epochs}
    records = [synthetic_record(name, 0, accuracy=0.7, f1_macro=0.6, **common) for name in ("week$\\foo$", "$x^2$")]
    page = render_html(records, header_lines(records))
    assert page.count("week$\\foo$") > 2 and page.count("$x^2$") > 2  # in the table and in every plot's text


def _refused(argv: list[str], capsys) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--seed", "-1"], "--seed must be between 0 and 4294967295"),
        (["--seeds", "1,4294967296"], "--seeds must be between 0 and 4294967295"),
        (["--seed", "9" * 300], "(300 digits)"),
        (["--split-seed", "-5"], "--split-seed must be between"),
    ],
)
def test_seeds_outside_numpy_s_range_are_refused_before_anything_is_written(tiny_model, tmp_path, capsys, extra, said):
    out = tmp_path / "out"
    assert said in _refused(_run(tiny_model, out, "--methods", "bitfit", *extra), capsys)
    assert not out.exists()


def test_an_empty_or_linked_out_is_refused(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--out: is empty" in _refused(
        ["run", "--model", str(tiny_model), "--out", "", "--methods", "bitfit"], capsys
    )
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert "is a symbolic link" in _refused(_run(tiny_model, link, "--methods", "bitfit"), capsys)
    assert list(tmp_path.iterdir()) == [link] and not (tmp_path / "elsewhere").exists()
    with pytest.raises(UserError, match="--out is empty"):
        grid("m", "bitfit", "")  # the Python API alike


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("bomb.yaml", BOMB, "YAML aliases (*name) are not allowed"),
        ("deep.yaml", "a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than 4 levels"),
        ("deep.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than a config file can be"),
        ("big.yaml", "epochs: 1\n" + "# padding\n" * 120_000, "larger than 1,000,000 bytes"),
    ],
)
def test_config_files_built_to_exhaust_memory_or_the_stack_are_one_line(tmp_path, capsys, name, text, said):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert said in _refused(["run", "--config", str(path), "--out", str(tmp_path / "out")], capsys)
    assert not (tmp_path / "out").exists()


def test_refusals_that_can_be_known_before_writing_are_made_before_writing(tiny_model, tmp_path, capsys, monkeypatch):
    import shutil

    import torch

    from peftbench.execution import executors
    from peftbench.runner import scheduling

    out = tmp_path / "out"
    if not torch.cuda.is_available():
        assert "--device cuda, but torch sees no CUDA GPU" in _refused(
            _run(tiny_model, out, "--device", "cuda"), capsys
        )
    real_find_spec = executors.importlib.util.find_spec
    monkeypatch.setattr(
        executors.importlib.util, "find_spec", lambda name: None if name == "ray" else real_find_spec(name)
    )
    assert "needs Ray" in _refused(_run(tiny_model, out, "--executor", "ray"), capsys)
    monkeypatch.undo()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(scheduling.shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    assert "not enough free space" in _refused(_run(tiny_model, out, "--methods", "full"), capsys)
    assert not out.exists()


def test_finished_weights_replace_an_earlier_folder_by_renames(tmp_path):
    """Row 15: the old weights are renamed aside before the new ones are renamed in (no rmtree then rename
    to race with another process), and removed after; under the claims lock with the record (scheduling)."""
    store = ResultStore(tmp_path)
    (tmp_path / "lora__seed1").mkdir()
    (tmp_path / "lora__seed1" / "adapter.bin").write_text("old", encoding="utf-8")
    staged = tmp_path / ".work" / "weights"
    staged.mkdir(parents=True)
    (staged / "adapter.bin").write_text("new", encoding="utf-8")
    assert store.place_weights(staged, "lora__seed1") == tmp_path / "lora__seed1"
    assert (tmp_path / "lora__seed1" / "adapter.bin").read_text(encoding="utf-8") == "new" and not staged.exists()
    assert not list(tmp_path.glob(".replaced-*"))


def test_a_checkpoint_whose_head_has_other_labels_trains_a_new_head(tiny_model, tmp_path, capsys):
    """Row 17: a fine-tuned checkpoint with a 5-label head, data with 2 labels."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    checkpoint = tmp_path / "fine-tuned-5"
    shutil.copytree(tiny_model, checkpoint)
    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=5).save_pretrained(checkpoint)
    out = tmp_path / "out"
    argv = ["run", "--model", str(checkpoint), "--out", str(out), "--no-progress", "--epochs", "1", *QUICK]
    assert cli.main([*argv, "--methods", "lora", "--workers", "inline"]) == 0
    assert "classification head was trained for 5 labels and the data has 2" in capsys.readouterr().err
    record = json.loads((out / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))
    assert record["result"]["status"] in ("ok", "collapsed")


def test_a_huge_line_is_cut_before_it_is_tokenised(tiny_model):
    """Row 13: a 5 MB review costs what its first tokens cost, and still counts as truncated."""
    from transformers import AutoTokenizer

    from peftbench.data import MAX_CHARS_PER_TOKEN, LabeledTexts, tokenize, truncated_share

    real = AutoTokenizer.from_pretrained(tiny_model)
    seen: list[int] = []

    def tokenizer(texts, pairs=None, **options):
        seen.append(max(map(len, texts)))
        return real(texts, pairs, **options)

    tokenizer.pad_token_id = real.pad_token_id  # type: ignore[attr-defined]
    texts = ["好" * 5_000_000, "房间很干净", "太差了"]
    data = LabeledTexts(texts, [0, 1, 0], ["0", "1"], "huge.csv", "x", rows_read=3, rows_dropped_empty=0)
    assert truncated_share(tokenizer, data, 32) == 1 / 3
    assert len(tokenize(tokenizer, data, 32)[0]["input_ids"]) == 32
    assert max(seen) <= 33 * MAX_CHARS_PER_TOKEN


def test_macro_f1_over_many_classes_is_scikit_learn_s(tmp_path):
    """Row 12: counted for all classes at once (benchmarks/bench_stats_classes.py prints the speed-up)."""
    import numpy as np
    from sklearn.metrics import f1_score

    from peftbench.analysis.stats import macro_f1

    rng = np.random.default_rng(0)
    truth, guess = rng.integers(0, 3000, (4, 500)), rng.integers(0, 3000, (4, 500))
    classes = np.union1d(truth, guess)
    want = [f1_score(t, g, average="macro", labels=classes) for t, g in zip(truth, guess)]
    assert np.allclose(macro_f1(truth, guess, classes), want, atol=1e-12)
    assert float(macro_f1(truth[0], guess[0], classes)) == pytest.approx(want[0], abs=1e-12)


def test_every_output_folder_a_command_names_is_refused_empty_or_linked(tmp_path, capsys):
    """The kin of row 11: compare's --out and predict's --merge OUT, like run's --out."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for argv in (
        ["compare", str(tmp_path), "--out", str(link)],
        ["compare", str(tmp_path), "--out", ""],
        ["predict", "--run", str(tmp_path / "run"), "--merge", str(link)],
        ["predict", "--run", str(tmp_path / "run"), "--merge", ""],
    ):
        said = _refused(argv, capsys)
        assert "is a symbolic link" in said or "is empty" in said, argv
    assert not (tmp_path / "elsewhere").exists()


@pytest.fixture
def shared_folder():
    """A folder shared by several users, as /tmp is: anyone writes, only a file's owner removes it (sticky)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="peftbench-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_another_user(task) -> str:
    """What task() returns (its repr, or the exception it raised) when run by user nobody, in a forked child of
    this root process: the files this process made are another user's files to it. Skips without root."""
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root, to become another user (nobody) in a child process")
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, run, say what happened, and leave without pytest's cleanup
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            said = repr(task())
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent as text
            said = f"raised {type(exc).__name__}: {exc}"
        os.write(write, said.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, encoding="utf-8") as pipe:
        said = pipe.read()
    os.waitpid(pid, 0)
    return said


def test_another_user_s_0644_lock_file_serves_this_user_s_claims(shared_folder):
    """Row 14 as it happens on a shared cluster: the lock file was created by another user, mode 0644."""
    from peftbench.execution.claims import ClaimBook

    (shared_folder / "claims").mkdir(mode=0o777)
    (shared_folder / "claims").chmod(0o1777)
    lock = shared_folder / "claims" / ".lock"
    lock.write_text("")
    lock.chmod(0o644)

    def claim_and_release() -> object:
        book = ClaimBook(shared_folder, timeout_s=60)
        held = book.claim("lora__seed1", "abc")
        book.release_all()
        return held

    assert _as_another_user(claim_and_release) == "None"  # claimed (no holder), released


def test_another_user_s_stale_file_in_a_sticky_folder_is_left_alone(shared_folder):
    """Row 3: a temporary file of the store's own pattern, old, but another user's in a sticky folder."""
    theirs = _old(shared_folder / ".report.md.k2j4_x9a.tmp")
    assert _as_another_user(lambda: ResultStore(shared_folder).remove_stale_temporary_files()) == "0"
    assert theirs.exists()


def _finish_the_same_run(out: Path, token: int, times: int) -> list[str]:
    """What one process finishing lora__seed1 over and over (as after a claim takeover) saw go wrong: after
    each of its own stores, the record and the weights beside it, read under the lock, must agree."""
    from synthetic_records import synthetic_record

    from peftbench.execution.claims import ClaimBook
    from peftbench.runner.scheduling import keep

    store, claims, wrong = ResultStore(out), ClaimBook(out, timeout_s=60), []
    for i in range(times):
        staged = out / f".work-{token}" / str(i)
        staged.mkdir(parents=True)
        (staged / "adapter.txt").write_text(f"{token}.{i}", encoding="utf-8")
        record = synthetic_record("lora", 1, weights_dir="lora__seed1", note=f"{token}.{i}")
        try:
            keep(store, claims, staged, record)
            with claims.exclusive():
                stored = store.finished("lora__seed1")
                weights = (out / "lora__seed1" / "adapter.txt").read_text(encoding="utf-8")
            if stored is None or stored.result.note != weights:
                wrong.append(f"record {stored and stored.result.note} beside weights {weights}")
        except Exception as exc:  # noqa: BLE001 - the test reports what broke
            wrong.append(f"{type(exc).__name__}: {exc}")
    return wrong


def test_two_processes_finishing_one_run_keep_its_record_and_weights_together(tmp_path):
    """Row 15, with two real processes: every store of one run is whole (no error, no record lost) and the
    record in runs/ always names the weights beside it."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        seen = pool.starmap(_finish_the_same_run, [(tmp_path, 1, 40), (tmp_path, 2, 40)])
    assert seen == [[], []]
    assert not list(tmp_path.glob(".replaced-*"))


def test_nothing_is_written_through_a_link_inside_out(tiny_model, tmp_path, capsys):
    """The kin of row 11 inside --out: runs/, claims/, a run's weights folder and a tracker's store given as
    links to elsewhere are refused before anything is written; the folder they point to stays empty."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for inside in ("runs", "failed", "claims", "bitfit__seed123", "tensorboard"):
        out = tmp_path / f"out-{inside}"
        out.mkdir()
        (out / inside).symlink_to(elsewhere, target_is_directory=True)
        extra = ["--report-to", "tensorboard"] if inside == "tensorboard" else []
        said = _refused(_run(tiny_model, out, "--methods", "bitfit", *extra), capsys)
        assert f"{out / inside} is a symbolic link" in said and "outside --out" in said
        assert sorted(p.name for p in out.iterdir()) == [inside]
    assert not list(elsewhere.iterdir())
    lock = tmp_path / "claims-folder" / "claims" / ".lock"
    lock.parent.mkdir(parents=True)
    lock.symlink_to(elsewhere / "lock")
    from peftbench.execution.claims import ClaimBook

    with pytest.raises(UserError, match="cannot open the claims lock"):
        ClaimBook(tmp_path / "claims-folder").claim("lora__seed1", "abc")
    assert not list(elsewhere.iterdir())


def test_data_and_config_files_are_read_through_links_but_never_from_a_device_or_an_endless_pipe(
    tiny_model, tmp_path, capsys
):
    """The kin of rows 5 and 13: a data file or config given as a link to a file is read as that file; one that
    is a device or a pipe (which may never end: /dev/zero) is refused in one line, not read whole."""
    from peftbench.config.files import read_options
    from peftbench.config.sections import DataConfig
    from peftbench.data import load_labeled_texts

    data = tmp_path / "reviews.csv"
    data.write_text("label,review\n" + "".join(f"{i % 2},text {i}\n" for i in range(40)), encoding="utf-8")
    linked = tmp_path / "linked.csv"
    linked.symlink_to(data)
    assert len(load_labeled_texts(DataConfig(source=str(linked))).texts) == 40
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for source in (fifo, Path("/dev/zero")):
        said = _refused(_run(tiny_model, tmp_path / "out", "--methods", "bitfit", "--data", str(source)), capsys)
        assert "is neither a file nor a folder" in said
    config = tmp_path / "grid.yaml"
    config.write_text("epochs: 1\n", encoding="utf-8")
    (tmp_path / "link.yaml").symlink_to(config)
    assert read_options(tmp_path / "link.yaml") == {"epochs": 1}
    said = _refused(["run", "--config", "/dev/zero", "--out", str(tmp_path / "out")], capsys)
    assert "larger than 1,000,000 bytes" in said
    said = _refused(["run", "--config", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert "is a folder" in said
    assert not (tmp_path / "out").exists()

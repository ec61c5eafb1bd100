"""report.html opens offline in headless Chromium: plots drawn, the table sortable, no console errors."""

import json
import shutil
import subprocess

import pytest

from peftbench.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="module")
def report_dir(tiny_model, tmp_path_factory):
    """Two methods × two seeds on data whose labels are Chinese words, plus one failing run."""
    folder = tmp_path_factory.mktemp("html")
    rows = [{"text": "房间很干净，服务也很好" * (1 + i % 3), "y": "正面" if i % 3 else "负面"} for i in range(160)]
    data = folder / "data.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    args = [
        "run",
        "--model",
        str(tiny_model),
        "--data",
        str(data),
        "--text-column",
        "text",
        "--label-column",
        "y",
        "--methods",
        "lora,bitfit",
        "--seeds",
        "0,1",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--max-length",
        "32",
        "--out",
        str(folder / "out"),
        "--no-progress",
        "--workers",
        "inline",
    ]
    assert main(args) == 0
    return folder / "out"


def test_report_html_is_self_contained(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert "负面" in page and "正面" in page
    # nothing that a browser would fetch (XML namespace URIs in the SVGs are names, not requests)
    for remote in ('href="http', "href='http", "src=", "<link", "url(http", "@import"):
        assert remote not in page, remote
    assert page.count("<svg") >= 4


def test_report_html_is_the_same_bytes_when_rebuilt(report_dir, tmp_path):
    """A committed results folder re-renders byte-identical: no dates or random ids in the SVGs."""
    copy = tmp_path / "again"
    shutil.copytree(report_dir, copy)
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.html").read_bytes() == (report_dir / "report.html").read_bytes()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it)")
def test_report_html_renders_in_chromium_without_errors(report_dir, tmp_path):
    url = (report_dir / "report.html").as_uri()
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert 'data-ready="1"' in dom, "the page's script did not run"
    plots = int(dom.split('data-plots="')[1].split('"')[0])
    assert plots >= 4, plots
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1400,2400",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 20_000

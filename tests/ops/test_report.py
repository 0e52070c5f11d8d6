"""`hub report`: a self-contained HTML file whose charts a real headless Chromium displays."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECTIONS = [
    "Segment sizes and exclusions",
    "Campaign funnels",
    "Engagement over time",
    "Journey drop-off",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail(
            "headless Chromium is missing: run `make install` as root, or apt-get install chromium"
        )
    return found


def browse(report: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,2000",
            *mode,
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def report(journey_run, ops_warehouse, tmp_path_factory) -> Path:
    """`hub report` against the suite's warehouse, after the journeys have run."""
    out = tmp_path_factory.mktemp("cli-report") / "campaign_report.html"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("DATABASE_URL", ops_warehouse.url())
    try:
        result = CliRunner().invoke(app, ["report", "--out", str(out)])
    finally:
        monkeypatch.undo()
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "charts" in result.output
    return out


def test_the_report_is_self_contained_with_a_chart_per_section(report):
    html = report.read_text()
    assert "<script" not in html and 'src="http' not in html and "href=" not in html
    for title in SECTIONS:
        section = html.split(f"<h2>{title}</h2>", 1)[1].split("</section>", 1)[0]
        (encoded,) = re.findall(r'src="data:image/png;base64,([^"]+)"', section)
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert image.width >= 600 and image.height >= 150, title
    assert re.search(r"<h2>Deliverability by (domain|audience)</h2>", html)


def test_headless_chromium_shows_the_charts(report, tmp_path):
    dom = browse(report, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = re.findall(
        r'<img class="chart" alt="([^"]+)" src="data:image/png;base64,([^"]*)"', dom.stdout
    )
    assert len(images) >= len(SECTIONS)
    assert all(len(data) > 1000 for _, data in images)

    screenshot = tmp_path / "report.png"
    shot = browse(report, tmp_path, f"--screenshot={screenshot}")
    assert screenshot.exists(), shot.stderr[-2000:]
    picture = Image.open(screenshot).convert("RGB")
    assert picture.size == (1280, 2000)
    colours = picture.getcolors(maxcolors=1 << 20) or []
    # Charts are drawn in several colours; a blank or unstyled page has a handful at most.
    assert len(colours) > 50
    top_band = picture.crop((0, 0, 1280, 1000)).convert("L")
    assert top_band.getextrema()[0] < 100  # dark pixels: text and bars, not an empty page


def test_the_report_holds_no_person_tokens_or_contacts(report, ops_warehouse):
    html = report.read_text()
    with ops_warehouse.connect() as conn:
        tokens = [t for (t,) in conn.execute("select person_token from landing.person_xref")]
    assert tokens and not any(token in html for token in tokens)
    assert "@" not in html

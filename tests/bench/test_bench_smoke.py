"""The benchmark harness runs end to end at a tiny size and produces a figure for every
stage, baseline and limit (never a time threshold: figures are not asserted)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report, run
from bench.catalogue import SECTIONS, SPECS
from bench.results import Results

pytestmark = pytest.mark.slow

# Figures that may legitimately be absent: an optional library that is not installed.
OPTIONAL = {"baseline.python_hl7"}
# Figures another command makes (bench.protection_overhead's A/B ingest), added to a report
# with `bench.report --add`.
EXTERNAL = {"ingest.protected", "ingest.unprotected"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Results]:
    """`python -m bench.run --smoke` in its own process (it forks a child per measurement
    and sets its own environment, neither of which belongs in the test process)."""
    out = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    command = [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)]
    command += ["--chart", str(out.with_suffix(".png"))]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HUB_STATE_DIR")}
    completed = subprocess.run(
        command, cwd=run.REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out, Results.load(out.with_suffix(".json"))


def test_smoke_run_measures_every_stage_baseline_and_limit(smoke):
    _, results = smoke
    size = results.sizes()[0]
    missing = [
        key
        for key in SPECS
        if key not in OPTIONAL | EXTERNAL and results.summary(key, size) is None
    ]
    errors = {k: v for k, v in results.data["errors"].items() if k not in OPTIONAL}
    assert not errors, errors
    assert not missing, f"no figure for {missing}"


def test_every_figure_has_records_time_and_memory(smoke):
    _, results = smoke
    size = results.sizes()[0]
    for key in SPECS:
        summary = results.summary(key, size)
        if summary is None:
            continue
        assert summary.records > 0, key
        assert summary.seconds >= 0 and summary.runs >= 1, key
        assert not math.isnan(summary.peak_rss_mb) and summary.peak_rss_mb > 0, key


def test_smoke_report_has_a_table_per_stage_and_a_chart(smoke):
    written, results = smoke
    text = written.read_text()
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    for section in SECTIONS:
        assert f"### {section.title}" in text, section.title
    assert "| vs baseline | % of limit |" in text
    assert written.with_suffix(".png").stat().st_size > 0
    assert results.data["profiles"], "the profile code path ran"


def test_smoke_run_leaves_the_committed_report_alone(smoke):
    written, _ = smoke
    assert written.resolve() != (run.REPO / "BENCHMARKS.md").resolve()


def test_regenerating_keeps_sections_other_engineers_wrote(smoke, tmp_path):
    _, results = smoke
    target = tmp_path / "BENCHMARKS.md"
    target.write_text(
        "# Benchmarks\n\n## dbt build (notes)\nkept as written\n\n"
        f"{report.BEGIN}\nold figures\n{report.END}\n\n## Sync notes\nalso kept\n"
    )
    report.write(results, target, None, run.REPO)
    text = target.read_text()
    assert "kept as written" in text and "also kept" in text
    assert "old figures" not in text
    assert text.index("## dbt build (notes)") < text.index(report.BEGIN)
    assert text.index(report.END) < text.index("## Sync notes")


def test_remeasure_runs_the_dbt_sync_and_events_steps_again_on_a_kept_size(tmp_path):
    """`bench.remeasure` re-runs dbt, sync and events steps on the warehouse a `--keep` run left on
    disk and writes a results file the report can take as a supplement."""
    work, out = tmp_path / "work", tmp_path / "again.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HUB_STATE_DIR")}
    kept = [sys.executable, "-m", "bench.run", "--smoke", "--only", "dbt_full", "--no-profile"]
    kept += ["--keep", "--workdir", str(work), "--out", str(tmp_path / "B.md")]
    kept += ["--chart", str(tmp_path / "B.png")]
    again = [sys.executable, "-m", "bench.remeasure", str(work), str(run.SMOKE_PATIENTS)]
    again += ["--only", "dbt_full,sync_full,sync_incremental,events", "--repeat", "1"]
    again += ["--out", str(out)]
    for command in (kept, again):
        completed = subprocess.run(
            command, cwd=run.REPO, env=env, capture_output=True, text=True, timeout=600
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
    results = Results.load(out)
    for figure in (
        "dbt.full",
        "sync.full",
        "sync.incremental",
        "events.readback",
        "events.extract",
    ):
        assert results.summary(figure, run.SMOKE_PATIENTS).runs == 1, figure
    assert not results.data["errors"]
    assert results.meta["command"].startswith("python -m bench.remeasure")


def test_the_protection_a_b_runs_end_to_end_and_leaves_nothing_behind(tmp_path: Path):
    """`python -m bench.protection_overhead` (not part of `make bench`) at a tiny size: both
    ingests produce figures the report can add, and its scratch folder (data, embedded
    server) is gone when it ends."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "ab.json"
    command = [sys.executable, "-m", "bench.protection_overhead", "--patients", "200"]
    command += ["--calls", "1000", "--results", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HUB_STATE_DIR")}
    completed = subprocess.run(
        command, cwd=run.REPO, env={**env, "TMPDIR": str(scratch)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = Results.load(out)
    for key in EXTERNAL:
        assert results.summary(key, 200).records > 0
    # its TemporaryDirectory (tmp*); the server may keep a short socket folder beside it
    assert [p for p in scratch.iterdir() if p.name.startswith("tmp")] == []

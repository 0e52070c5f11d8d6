"""`python -m bench.sync_feedback` (the sync and feedback benchmark in isolation, with its own
stand-ins for the dbt models the sync reads) runs end to end at a tiny size: its stand-ins
must keep up with what the sync reads, or the command breaks unnoticed. Figures are not
asserted, only that each step synced or read what it should."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import run

pytestmark = pytest.mark.slow


def test_sync_feedback_benchmark_runs_end_to_end(tmp_path):
    command = [sys.executable, "-m", "bench.sync_feedback", "--contacts", "300",
               "--events-file", "2000", "--state", str(tmp_path)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HUB_STATE_DIR")}
    completed = subprocess.run(
        command, cwd=run.REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout[completed.stdout.index("{") :])
    assert results["sync.full"]["added"] == 300
    assert results["sync.no_change"] == {**results["sync.no_change"], "added": 0, "updated": 0}
    assert (
        results["sync.incremental_1pct"]["updated"] == results["sync.incremental_1pct"]["changed"]
    )
    assert results["events.polling"]["new"] == results["events.polling"]["events"] > 0
    assert results["events.extract_file"]["new"] == 2000

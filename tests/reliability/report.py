"""Run the reliability suites and write the figures they measured into docs/reliability.md.

    .venv/bin/python -m tests.reliability.report           # the default run (a few minutes)
    .venv/bin/python -m tests.reliability.report --soak    # the soak run too (much longer)
    .venv/bin/python -m tests.reliability.report --render  # only re-render from the JSON

Each run writes its counters to docs/reliability-figures.json (see tests/reliability/
figures.py); the table between the figures markers in docs/reliability.md is rendered from
that file, so every number in it comes from a recorded test run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIGURES_JSON = REPO / "docs" / "reliability-figures.json"
DOC = REPO / "docs" / "reliability.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"

ROWS = [
    ("corpus_files", "hostile input files ingested (committed corpus and oversized inputs)"),
    ("corpus_records_read", "records read from them"),
    ("corpus_records_loaded", "... loaded"),
    ("corpus_records_quarantined", "... quarantined with a reason code"),
    ("corpus_file_level_refusals", "files refused whole with a typed, PHI-free error"),
    ("fuzz_inputs", "generated inputs fed to the FHIR, HL7 and CRM readers"),
    ("kills_ingest", "kill -9 during ingest"),
    ("kills_dbt", "kill -9 during dbt build"),
    ("kills_sync", "kill -9 during sync"),
    ("kills_survived", "kills after which the rerun equalled an uninterrupted run"),
    ("pg_connections_terminated", "PostgreSQL connections terminated mid-load / mid-sync"),
    ("engine_faults_injected", "engine faults injected (5xx, 429, slow, silent, dropped, gone)"),
    ("members_delivered_under_faults", "members delivered while the engine failed"),
    ("bulk_sync_2000_members_delivered", "2k-contact sync under 5% transient failures"),
    ("bulk_sync_100000_members_delivered", "100k-contact sync under 5% transient failures"),
    ("webhook_deliveries", "webhook deliveries in a concurrent burst (with duplicates)"),
    ("webhooks_refused", "forged, stale or future webhooks refused"),
    ("tls_refusals", "engine certificates outside the configured CA refused"),
    ("injection_attempts", "SQL injection attempts through names, config and filters"),
    ("backups_taken", "encrypted backups taken"),
    ("backups_restored", "backups restored and verified"),
    ("damaged_backups_refused", "damaged / truncated / reordered backups refused"),
    ("records_lost", "records lost"),
    ("members_lost", "members lost at the engine"),
    ("members_duplicated", "members delivered twice"),
]
ZERO_IS_THE_POINT = {"records_lost", "members_lost", "members_duplicated"}


def run(variant: str) -> int:
    env = {
        **os.environ,
        "HUB_RELIABILITY_FIGURES": str(FIGURES_JSON),
        "HUB_RELIABILITY_VARIANT": variant,
        "DO_NOT_TRACK": "1",
    }
    marker = "soak" if variant == "soak" else "not soak"
    with tempfile.TemporaryDirectory(prefix="hub-reliability-") as basetemp:
        command = [
            sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider",
            "-m", marker, f"--basetemp={basetemp}",
        ]  # fmt: skip
        return subprocess.call(command, cwd=REPO, env=env)


def render() -> None:
    data = json.loads(FIGURES_JSON.read_text()) if FIGURES_JSON.exists() else {}
    variants = [v for v in ("default", "soak") if v in data]
    lines = ["| | " + " | ".join(f"`{v}` run" for v in variants) + " |"]
    lines.append("|---|" + "---:|" * len(variants))
    for key, label in ROWS:
        values = [data[v]["figures"].get(key) for v in variants]
        if all(v is None for v in values) and key not in ZERO_IS_THE_POINT:
            continue
        cells = [f"{v:,}" if v is not None else ("0" if key in ZERO_IS_THE_POINT else "-")
                 for v in values]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for v in variants:
        outcomes = ", ".join(f"{n} {k}" for k, n in data[v]["outcomes"].items())
        lines.append(
            f"`{v}` run: {data[v]['generated_at']} on {data[v]['machine']}; tests: {outcomes}."
        )
        if data[v]["failed"]:
            lines.append(f"Failed in that run: {', '.join(data[v]['failed'])}.")
    table = "\n".join(lines)
    text = DOC.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report")
    parser.add_argument("--soak", action="store_true", help="also run the soak variants")
    parser.add_argument("--render", action="store_true", help="only re-render the table")
    args = parser.parse_args()
    status = 0
    if not args.render:
        status = run("default")
        if args.soak:
            status = run("soak") or status
    render()
    return status


if __name__ == "__main__":
    sys.exit(main())

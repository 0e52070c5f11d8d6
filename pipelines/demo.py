"""`hub demo`: generate a small population, run every stage, print what happened."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.table import Table

from connectors.warehouse.database import Warehouse, state_dir


def run_demo(patients: int, seed: int, console: Console) -> dict[str, object]:
    started = time.monotonic()
    state = state_dir()
    inbound = state / "inbound"
    os.environ.setdefault("DO_NOT_TRACK", "1")

    from synthetic.generate import generate

    console.print(f"[bold]1/3[/] generating {patients:,} synthetic patients into {inbound}")
    generate(inbound, patients=patients, seed=seed)

    console.print("[bold]2/3[/] starting the warehouse (embedded PostgreSQL unless DATABASE_URL)")
    warehouse = Warehouse.from_env(keep_running=True)
    warehouse.ensure_schema()

    console.print(
        "[bold]3/3[/] materializing every asset (ingest, protect, dbt, activate, feedback)"
    )
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    dagster_home = state / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    settings = dagster_home / "dagster.yaml"
    if not settings.exists():
        settings.write_text("telemetry:\n  enabled: false\n")
    os.environ.setdefault("DAGSTER_HOME", str(dagster_home))
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("full_pipeline")
    # Step-level chatter goes to the Dagster UI (the run is stored in DAGSTER_HOME); the
    # terminal shows warnings and the summary.
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    log_path = state / "demo.log"
    with open(log_path, "w") as log, contextlib.redirect_stdout(log):
        result = job.execute_in_process(instance=instance, run_config=quiet, raise_on_error=False)
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        raise SystemExit(
            f"demo run failed at steps {failed}; see {log_path} and the Dagster UI for details"
        )

    summary = collect_summary(warehouse)
    summary["seconds"] = round(time.monotonic() - started, 1)
    print_summary(summary, warehouse, dagster_home, console)
    return summary


def collect_summary(warehouse: Warehouse) -> dict[str, object]:
    with warehouse.connect() as conn:
        sources = conn.execute(
            "select source, count(*), sum(records_read), sum(records_loaded),"
            " sum(records_quarantined) from landing.source_files group by source order by source"
        ).fetchall()
        persons = conn.execute(
            "select count(distinct person_token) from landing.person_xref"
        ).fetchone()[0]
        segments = conn.execute(
            "select c.audience, c.purpose, count(m.person_token)"
            " from marts.segment_catalog c left join marts.audience_membership m"
            " using (audience) group by 1, 2 order by 1"
        ).fetchall()
        pushed = conn.execute("select count(*) from activation.sync_state").fetchone()[0]
        events = conn.execute(
            "select event_type, count(*) from engagement.events group by 1 order by 1"
        ).fetchall()
        journeys = conn.execute(
            "select journey, count(*), count(*) filter (where status = 'active'),"
            " coalesce(max(m.sends), 0) from journeys.positions"
            " left join (select journey, sum(sends) as sends from marts.journey_step_metrics"
            " group by 1) m using (journey) group by 1 order by 1"
        ).fetchall()
    return {
        "sources": [
            {"source": s, "files": f, "read": r, "loaded": lo, "quarantined": q}
            for s, f, r, lo, q in sources
        ],
        "persons": persons,
        "audiences": [{"audience": a, "purpose": p, "members": n} for a, p, n in segments],
        "contacts_pushed": pushed,
        "events": dict(events),
        "journeys": [
            {"journey": j, "entered": n, "active": a, "sends": int(sends)}
            for j, n, a, sends in journeys
        ],
        "report": str(state_dir() / "reports" / "campaign_report.html"),
    }


def print_summary(
    summary: dict, warehouse: Warehouse, dagster_home: Path, console: Console
) -> None:
    table = Table(title="Ingest (records)")
    for column in ("source", "files", "read", "loaded", "quarantined"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for row in summary["sources"]:
        table.add_row(*(str(row[c]) for c in ("source", "files", "read", "loaded", "quarantined")))
    console.print(table)
    console.print(f"Persons resolved across sources: {summary['persons']:,}")
    audiences = Table(title="Audiences (consent-filtered)")
    for column in ("audience", "purpose", "members"):
        audiences.add_column(column)
    for row in summary["audiences"]:
        audiences.add_row(row["audience"], row["purpose"], str(row["members"]))
    console.print(audiences)
    console.print(f"Contacts pushed to the engine: {summary['contacts_pushed']:,}")
    events = ", ".join(f"{k} {v:,}" for k, v in summary["events"].items()) or "none"
    console.print(f"Events read back: {events}")
    for row in summary["journeys"]:
        console.print(
            f"Journey {row['journey']}: {row['entered']:,} entered, {row['active']:,} in"
            f" progress, {row['sends']:,} messages sent"
        )
    console.print(f"Finished in {summary['seconds']} s.\n")
    console.print("[bold]Where to look next[/]")
    console.print(f"  Dagster UI:  make dev   (DAGSTER_HOME={dagster_home}, http://127.0.0.1:3000)")
    console.print(f"  Report:      {summary['report']}")
    console.print(f"  SQL (psql):  psql '{warehouse.display_url()}'")
    console.print("               e.g. select * from marts.audience_membership limit 10;")
    console.print("  Stop the embedded database: .venv/bin/hub db stop")

"""Marketing-ops commands: `hub segments`, `hub journeys` and `hub report`.

Everything shown is an aggregate or a name (segments, purposes, fields, counts, reasons,
sync times): no person tokens, no contact data. Errors say what to run next.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

segments_app = typer.Typer(help="Segments: size, purpose, fields, syncs, exclusions.")
journeys_app = typer.Typer(help="Journeys: validate the YAML, see positions, run a tick.")
stderr = Console(stderr=True, soft_wrap=True)  # an error line is never broken up


def _stdout() -> Console:
    # Piped or captured output is not cut to 80 columns: names must survive intact.
    return Console() if sys.stdout.isatty() else Console(width=160)


NOT_BUILT = (
    "the marts are not built yet: run `make demo`, or the full_pipeline job in Dagster"
    " (`make dev`), then try again"
)


def register(app: typer.Typer) -> None:
    """Mount the commands on the `hub` app."""
    app.add_typer(segments_app, name="segments", no_args_is_help=True)
    app.add_typer(journeys_app, name="journeys", no_args_is_help=True)
    app.command("report")(report)


def _warehouse():
    from connectors.warehouse.database import Warehouse

    warehouse = Warehouse.from_env(keep_running=True)
    warehouse.ensure_schema()
    return warehouse


def _fail(message: str) -> typer.Exit:
    stderr.print(f"[red]error:[/] {message}")
    return typer.Exit(1)


# --- segments --------------------------------------------------------------------------------


def segment_rows(conn) -> list[dict[str, Any]]:
    """One row per segment: purpose, size, exclusions and the latest sync."""
    import psycopg

    try:
        rows = conn.execute(
            "select c.audience, c.purpose, c.owner,"
            " (select count(*) from marts.audience_membership m where m.audience = c.audience),"
            " (select coalesce(sum(persons), 0) from marts.audience_exclusions e"
            "   where e.audience = c.audience),"
            " (select max(r.finished_at) from activation.sync_runs r"
            "   where r.audience = c.audience and not r.dry_run)"
            " from marts.segment_catalog c order by c.audience"
        ).fetchall()
    except psycopg.errors.UndefinedTable:
        raise _fail(NOT_BUILT) from None
    return [
        {
            "segment": audience,
            "purpose": purpose,
            "owner": owner,
            "members": int(members),
            "excluded": int(excluded),
            "last_sync": last.isoformat(timespec="seconds") if last else None,
        }
        for audience, purpose, owner, members, excluded, last in rows
    ]


def segment_detail(conn, name: str) -> dict[str, Any]:
    """Everything `hub segments show` prints about one segment."""
    import psycopg

    try:
        row = conn.execute(
            "select audience, segment_model, purpose, description, owner, personalization_fields"
            " from marts.segment_catalog where audience = %s or segment_model = %s",
            (name, name),
        ).fetchone()
        known = [a for (a,) in conn.execute("select audience from marts.segment_catalog")]
    except psycopg.errors.UndefinedTable:
        raise _fail(NOT_BUILT) from None
    if row is None:
        raise _fail(
            f"no segment named {name!r}. Known segments: {', '.join(sorted(known)) or 'none'}"
            " (see `hub segments list`)"
        )
    audience, model, purpose, description, owner, fields = row
    (members,) = conn.execute(
        "select count(*) from marts.audience_membership where audience = %s", (audience,)
    ).fetchone()
    exclusions = conn.execute(
        "select reason, persons from marts.audience_exclusions where audience = %s"
        " order by persons desc, reason",
        (audience,),
    ).fetchall()
    syncs = conn.execute(
        "select distinct on (destination) destination, status, finished_at, added, updated,"
        " removed, excluded from activation.sync_runs where audience = %s and not dry_run"
        " order by destination, started_at desc",
        (audience,),
    ).fetchall()
    return {
        "segment": audience,
        "model": model,
        "purpose": purpose,
        "owner": owner,
        "description": description,
        "size": int(members),
        "personalization_fields": list(fields or []),
        "exclusions_by_reason": {reason: int(n) for reason, n in exclusions},
        "last_sync_by_destination": {
            destination: {
                "status": status,
                "finished_at": finished.isoformat(timespec="seconds") if finished else None,
                "added": added,
                "updated": updated,
                "removed": removed,
                "excluded": excluded,
            }
            for destination, status, finished, added, updated, removed, excluded in syncs
        },
    }


@segments_app.command("list")
def segments_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every segment with its purpose, size, exclusions and latest sync."""
    with _warehouse().connect() as conn:
        rows = segment_rows(conn)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("segment", "purpose", "members", "excluded", "last sync", "owner")
    for row in rows:
        table.add_row(
            row["segment"],
            row["purpose"],
            f"{row['members']:,}",
            f"{row['excluded']:,}",
            row["last_sync"] or "never",
            row["owner"] or "",
        )
    _stdout().print(table)


@segments_app.command("show")
def segments_show(
    name: str = typer.Argument(..., help="Segment (audience) name, see `hub segments list`."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Size, purpose, personalization fields, last sync per destination, exclusions."""
    with _warehouse().connect() as conn:
        detail = segment_detail(conn, name)
    if as_json:
        typer.echo(json.dumps(detail, indent=2))
        return
    stdout = _stdout()
    stdout.print(f"[bold]{detail['segment']}[/] ({detail['model']})")
    stdout.print(f"  purpose: {detail['purpose']}    owner: {detail['owner'] or '-'}")
    stdout.print(f"  {detail['description'] or ''}")
    stdout.print(f"  size: {detail['size']:,} people allowed today")
    fields = ", ".join(detail["personalization_fields"]) or "none"
    stdout.print(f"  personalization fields: {fields}")
    exclusions = Table("excluded because", "people")
    for reason, persons in detail["exclusions_by_reason"].items():
        exclusions.add_row(reason, f"{persons:,}")
    stdout.print(exclusions if detail["exclusions_by_reason"] else "  no exclusions")
    syncs = Table("destination", "status", "finished", "added", "updated", "removed", "excluded")
    for destination, sync in detail["last_sync_by_destination"].items():
        syncs.add_row(
            destination,
            sync["status"],
            sync["finished_at"] or "-",
            *(str(sync[k]) for k in ("added", "updated", "removed", "excluded")),
        )
    if detail["last_sync_by_destination"]:
        stdout.print(syncs)
    else:
        stdout.print(f"  never synced: hub sync {detail['segment']} --dry-run shows what would go")


# --- journeys --------------------------------------------------------------------------------


@journeys_app.command("validate")
def journeys_validate(
    directory: Path | None = typer.Option(None, "--dir", help="Default: HUB_JOURNEYS_DIR."),
) -> None:
    """Load every journey file; print each problem with its file and key."""
    from domain.journeys import JourneyError
    from services.journeys import load

    try:
        journeys = load(directory)
    except JourneyError as error:
        for problem in error.problems:
            stderr.print(f"[red]invalid:[/] {problem}")
        raise typer.Exit(1) from None
    for journey in journeys:
        sends = sum(1 for step in journey.steps if step.send)
        typer.echo(
            f"{journey.name}: ok ({len(journey.steps)} steps, {sends} messages,"
            f" purpose {journey.purpose})"
        )


@journeys_app.command("status")
def journeys_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """People per journey by status and by current step."""
    from services.journeys import journey_summary

    with _warehouse().connect() as conn:
        summary = journey_summary(conn)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    if not summary:
        typer.echo("no journey has run yet: hub journeys run (or the journeys job in Dagster)")
    for entry in summary:
        by_status = ", ".join(f"{k} {v}" for k, v in sorted(entry["by_status"].items()))
        at_step = ", ".join(f"{k} {v}" for k, v in sorted(entry["at_step"].items()))
        typer.echo(
            f"{entry['journey']}: {by_status}" + (f" (waiting: {at_step})" if at_step else "")
        )


@journeys_app.command("run")
def journeys_run(
    names: list[str] = typer.Option([], "--journey", help="Journey name (repeatable)."),
    as_of: str | None = typer.Option(None, "--as-of", help="ISO time to evaluate at."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One tick: enter, exit and advance people; sends go through the consent gate."""
    from pipelines.definitions import resources
    from pipelines.resources import PrivacyResource
    from services.journeys import load, run_journeys

    journeys = load(None, names)
    now = datetime.fromisoformat(as_of) if as_of else datetime.now(UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    engine_resource = resources()["email_engine"]
    try:
        with _warehouse().connect() as conn:
            ticks = run_journeys(
                conn,
                engine_resource.engine(),
                PrivacyResource().vault_cipher(),
                journeys,
                destination=engine_resource.destination,
                now=now,
            )
    finally:
        engine_resource.teardown_after_execution(None)
    if as_json:
        typer.echo(json.dumps([t.as_dict() for t in ticks], indent=2))
        return
    for tick in ticks:
        typer.echo(
            f"{tick.journey}: entered {tick.entered}, sent {tick.sent}, completed"
            f" {tick.completed}, exited {sum(tick.exited.values())} {dict(tick.exited)},"
            f" active {tick.active}"
        )


# --- report ----------------------------------------------------------------------------------


def report(
    out: Path = typer.Option(
        Path("campaign_report.html"), "--out", help="Where to write the HTML file."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write the self-contained HTML campaign report (charts embedded) from the marts."""
    from pipelines.report import write_report

    with _warehouse().connect() as conn:
        built = write_report(conn, out)
    missing = [s.title for s in built.sections if not s.chart]
    summary = {
        "path": str(out.resolve()),
        "charts": built.charts,
        "sections_without_chart": missing,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"wrote {summary['path']} ({built.charts} charts)")
    for title in missing:
        note = built.section(title).note or "nothing to chart"
        typer.echo(f"  {title}: {note}")

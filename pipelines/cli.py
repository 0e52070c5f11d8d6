"""The `hub` command line: what data engineers and marketing ops run by hand.

Errors are shown as one line naming what failed and what to do, never a stack trace that
could carry PHI (set HUB_DEBUG=1 for tracebacks while developing).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from pipelines.cli_backup import register as register_backup_commands
from pipelines.cli_ops import register as register_ops_commands
from pipelines.cli_privacy import register as register_privacy_commands

app = typer.Typer(
    help="audience-hub: EHR/CRM data in, consent-filtered audiences out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The warehouse database.", no_args_is_help=True)
engine_app = typer.Typer(help="The local SANDBOX email engine.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(engine_app, name="engine")
app.add_typer(audit_app, name="audit")
quarantine_app = typer.Typer(help="Rejected records: list and replay.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
register_ops_commands(app)  # hub segments, hub journeys, hub report (pipelines/cli_ops.py)
# hub keys, hub forget, hub policy, hub retention, hub audit disclosures (cli_privacy.py)
register_privacy_commands(app, audit_app)
register_backup_commands(app)  # hub backup, hub restore (pipelines/cli_backup.py)
console = Console(stderr=True)


def _warehouse(keep_running: bool = True):
    from connectors.warehouse.database import Warehouse

    warehouse = Warehouse.from_env(keep_running=keep_running)
    warehouse.ensure_schema()
    return warehouse


def _privacy():
    from pipelines.resources import PrivacyResource

    return PrivacyResource()


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="Folder to write fhir/, hl7/, crm/ into."),
    patients: int = typer.Option(1000, "--patients", min=1),
    seed: int = typer.Option(7, "--seed"),
) -> None:
    """Write a synthetic population as FHIR NDJSON, HL7 v2 and CRM CSV (deterministic)."""
    from synthetic.generate import generate as run

    summary = run(out, patients=patients, seed=seed)
    console.print(
        f"wrote {patients:,} patients to {out}: {summary.total_records:,} records"
        f" ({summary.total_bad} deliberately bad) in {summary.seconds:.1f} s"
    )


@app.command()
def ingest(
    uris: list[str] = typer.Argument(..., help="Files: local paths or s3://, sftp://, https://"),
    source: str | None = typer.Option(None, help="fhir | hl7 | crm (default: from the name)"),
    mode: str = typer.Option("fast", help="FHIR validation: fast | strict"),
    as_json: bool = typer.Option(False, "--json", help="Per-file counts as JSON (no PHI)."),
) -> None:
    """Load files into the warehouse; print read / loaded / quarantined per file."""
    from services.ingest import ingest_uris

    warehouse = _warehouse()
    with warehouse.connect() as conn:
        results = ingest_uris(conn, uris, _privacy().protector(), source, mode)
    rows = [r.as_dict() for r in results]
    if as_json:
        typer.echo(json.dumps({"files": rows}, indent=2))
    else:
        for row in rows:
            note = " (already loaded)" if row["skipped"] else ""
            typer.echo(
                f"{row['uri']}: read {row['read']}, loaded {row['loaded']},"
                f" quarantined {row['quarantined']}{note}"
            )
    if any(r["read"] != r["loaded"] + r["quarantined"] for r in rows):
        raise typer.Exit(1)


@app.command()
def resolve(as_json: bool = typer.Option(False, "--json")) -> None:
    """Resolve source subjects to persons (hashed identity keys) and print the match report."""
    from services.identity import resolve_persons

    privacy = _privacy()
    with _warehouse().connect() as conn:
        report = resolve_persons(conn, privacy.tokenizer(), privacy.policy())
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        links = ", ".join(f"{k} {v}" for k, v in sorted(report.links_by_key_type.items()))
        typer.echo(
            f"{report.subjects} source subjects -> {report.persons} persons"
            f" (links: {links or 'none'}; merges applied: {report.merges_applied})"
        )


@app.command()
def demo(
    patients: int = typer.Option(2000, "--patients", min=10),
    seed: int = typer.Option(7, "--seed"),
) -> None:
    """Generate a small population and run every stage end to end, then summarise."""
    from pipelines.demo import run_demo

    run_demo(patients, seed, Console())


@app.command()
def sync(
    audience: str = typer.Argument(..., help="Audience (segment) name, see marts.segment_catalog"),
    to: str = typer.Option("sandbox", "--to", help="Destination name."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; push nothing."),
    mode: str = typer.Option("mirror", help="upsert | mirror | append"),
    as_json: bool = typer.Option(False, "--json"),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, max=1000),
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=16),  # sync.CONCURRENCY
    max_reject_share: float = typer.Option(0.05, "--max-reject-share", min=0.0, max=1.0),
    yes: bool = typer.Option(False, "--yes", "-y", help="Push without the confirmation prompt."),
) -> None:
    """Sync one audience to the email engine (diff against what was last synced).

    On a terminal, a real run first shows the dry-run preview and asks for confirmation
    (--yes skips it; scripts and --json never prompt).

    Exit status: 0 done (or dry run), 1 not confirmed, 3 blocked for want of an approval,
    4 alert (the engine rejected more than --max-reject-share of the rows).
    """
    from pipelines.definitions import resources
    from services.sync import last_dry_run, sync_audience

    engine_resource = resources()["email_engine"]
    warehouse = _warehouse()
    confirm = not (dry_run or yes or as_json) and _interactive()
    try:
        with warehouse.connect() as conn, _sync_progress(enabled=not as_json) as progress:

            def run(preview: bool):
                return sync_audience(
                    conn,
                    engine_resource.engine(),
                    _privacy().vault_cipher(),
                    destination=to,
                    audience=audience,
                    mode=mode,
                    dry_run=preview,
                    batch_size=batch_size,
                    concurrency=concurrency,
                    max_reject_share=max_reject_share,
                    on_progress=progress,
                )

            if confirm:
                preview = run(True).as_dict()
                typer.echo(
                    f"{audience} -> {to}: {preview['added']} adds, {preview['updated']} updates,"
                    f" {preview['removed']} removes; excluded {preview['excluded']}"
                    f" {preview['excluded_by_reason']}"
                )
                if not typer.confirm(f"Push these changes to {to}?", default=False):
                    typer.echo("Nothing pushed.")
                    raise typer.Exit(1)
            previous = None if dry_run else last_dry_run(conn, to, audience)
            result = run(dry_run)
    finally:
        engine_resource.teardown_after_execution(None)
    summary = result.as_dict()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        label = "DRY RUN: would push" if dry_run else "pushed"
        typer.echo(
            f"{audience} -> {to}: {label} {summary['added']} adds, "
            f"{summary['updated']} updates, {summary['removed']} removes; "
            f"excluded {summary['excluded']} {summary['excluded_by_reason']}; "
            f"rejected {summary['rejected']} ({summary['status']}, {summary['seconds']} s)"
        )
        if previous:
            typer.echo(
                f"  dry run {previous['run_id']} expected {previous['added']} adds, "
                f"{previous['updated']} updates, {previous['removed']} removes"
            )
        if result.blocked_reason:
            typer.echo(
                f"  {result.held_back} members held back: a marketing audience needs a recorded"
                f" review first: hub approve {audience} --to {to} --by NAME --note TEXT"
            )
    if not dry_run and result.status in ("blocked", "alert"):
        raise typer.Exit(3 if result.status == "blocked" else 4)


def _interactive() -> bool:
    """Whether a person is at the keyboard (prompts make sense), not a script or a pipe."""
    return sys.stdin.isatty()


def _sync_progress(enabled: bool):
    """A context giving an on_progress callback that draws a bar on stderr (or does nothing)."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if not enabled:
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def bars():
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as progress:
            tasks: dict[str, object] = {}

            def update(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    label = "members gated and diffed" if phase == "diff" else "removals pushed"
                    tasks[phase] = progress.add_task(label, total=total)
                progress.update(tasks[phase], completed=done, total=total)

            yield update

    return bars()


@app.command()
def approve(
    audience: str = typer.Argument(..., help="Audience (segment) name."),
    by: str = typer.Option(..., "--by", help="Who reviewed the audience and its message."),
    note: str = typer.Option(..., "--note", help="What was reviewed (kept with the approval)."),
    to: str = typer.Option("*", "--to", help="Destination it may go to ('*': any)."),
) -> None:
    """Record the review a marketing audience needs before its first send (audited)."""
    from services.approvals import approve as record

    with _warehouse().connect() as conn:
        approval = record(conn, audience, by, note, destination=to)
    typer.echo(
        f"approved {audience} -> {approval.destination} (approval {approval.approval_id},"
        f" definition {approval.definition_hash[:12]}); a change to its definition, purpose"
        " or personalization fields voids it"
    )


@db_app.command("url")
def db_url() -> None:
    """Print the warehouse connection string (starts the embedded server if needed)."""
    typer.echo(_warehouse(keep_running=True).url())


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server (no-op with DATABASE_URL)."""
    from connectors.warehouse.database import state_dir
    from connectors.warehouse.embedded import stop_embedded

    stopped = stop_embedded(state_dir() / "pg")
    typer.echo("stopped" if stopped else "not running")


@engine_app.command("serve")
def engine_serve(
    port: int = typer.Option(8443, help="Port on 127.0.0.1."),
    seed: int = typer.Option(7),
    smtp_sink_port: int | None = typer.Option(
        None, "--smtp-sink-port", help="Also deliver MIME mail to a local STARTTLS sink here."
    ),
) -> None:
    """Run the SANDBOX engine over HTTPS on loopback until interrupted."""
    from connectors.warehouse.database import state_dir
    from sandbox.engine import serve

    serve(state_dir() / "sandbox", port=port, seed=seed, smtp_sink_port=smtp_sink_port)


@audit_app.command("verify")
def audit_verify() -> None:
    """Prove the audit chain unbroken, or name the first bad record."""
    from connectors.warehouse.audit import verify_chain

    with _warehouse().connect() as conn:
        intact, bad_id, checked = verify_chain(conn)
    if intact:
        typer.echo(f"audit chain intact: {checked} records verified")
    else:
        typer.echo(f"audit chain BROKEN at record {bad_id} (after {checked} good records)")
        raise typer.Exit(1)


@quarantine_app.command("list")
def quarantine_list(
    source: str | None = typer.Option(None, help="fhir | hl7 | crm"),
    reason: str | None = typer.Option(None, help="A reason code, e.g. CRM_BAD_DATE"),
    include_replayed: bool = typer.Option(False, "--all", help="Also show replayed records."),
    limit: int = typer.Option(100),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Rejected records with file, position, reason and a PHI-free message."""
    from services.quarantine import list_quarantine

    with _warehouse().connect() as conn:
        records = list_quarantine(
            conn, source=source, reason=reason, include_replayed=include_replayed, limit=limit
        )
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    for r in records:
        mark = " (replayed)" if r.replayed else ""
        typer.echo(
            f"{r.quarantine_id}\t{r.source}\t{r.file}\t{r.position}\t{r.reason}\t{r.message}{mark}"
        )


@quarantine_app.command("replay")
def quarantine_replay(
    ids: list[int] = typer.Argument(None, help="Quarantine ids (see `hub quarantine list`)."),
    reason: str | None = typer.Option(None, help="Replay every open record with this reason."),
) -> None:
    """Parse rejected records again (after a fix) and load those that now pass."""
    from services.quarantine import list_quarantine, replay

    with _warehouse().connect() as conn:
        chosen = list(ids or [])
        if reason:
            chosen += [r.quarantine_id for r in list_quarantine(conn, reason=reason, limit=10**6)]
        if not chosen:
            raise typer.BadParameter("give quarantine ids or --reason")
        outcomes = replay(conn, _privacy().protector(), chosen)
    for outcome in outcomes:
        state = "loaded" if outcome.loaded else f"still rejected ({outcome.reason})"
        typer.echo(f"{outcome.quarantine_id}: {state}")


@app.command("bulk-export")
def bulk_export(
    base_url: str = typer.Option(..., "--base-url", help="FHIR base URL (https:// only)."),
    client_id: str = typer.Option(..., "--client-id", help="SMART Backend Services client id."),
    key_file: Path = typer.Option(..., "--key-file", help="PEM private key: RSA or EC P-384."),
    token_url: str = typer.Option(..., "--token-url", help="The server's OAuth token URL."),
    out: str = typer.Option(..., "--out", help="Folder or smart_open URI for the files."),
    group: str | None = typer.Option(None, "--group", help="Group id (group-level export)."),
    types: str | None = typer.Option(None, "--types", help="Resource types, comma-separated."),
    since: str | None = typer.Option(None, "--since", help="Changed since (ISO instant + zone)."),
    kid: str | None = typer.Option(None, "--kid", help="Key id (default: JWK thumbprint)."),
    scope: str = typer.Option("system/*.read", "--scope"),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="Extra CA bundle to trust."),
    keep_job: bool = typer.Option(False, "--keep-job", help="Do not DELETE the finished job."),
    ingest: bool = typer.Option(False, "--ingest", help="Load the downloaded resource files."),
    as_json: bool = typer.Option(False, "--json", help="Files and counts as JSON (no PHI)."),
) -> None:
    """Run a FHIR Bulk Data $export (SMART Backend Services auth) and download the files."""
    from connectors.fhir.bulk import BulkDataError, make_client, run_export

    client = make_client(
        base_url,
        client_id=client_id,
        key_file=key_file,
        token_url=token_url,
        scope=scope,
        kid=kid,
        ca_file=str(ca_file) if ca_file else None,
    )
    wanted = [t.strip() for t in (types or "").split(",") if t.strip()]
    try:
        result = run_export(
            client, out, group=group, types=wanted, since=since, delete=not keep_job
        )
    except BulkDataError as error:  # PHI-free by construction: reason, status, issue code
        console.print(f"[red]bulk export failed:[/] {error}")
        raise typer.Exit(1) from None
    summary: dict[str, object] = {"export": result.as_dict()}
    if ingest:
        from services.ingest import ingest_uris

        with _warehouse().connect() as conn:
            loaded = ingest_uris(conn, result.output_uris(), _privacy().protector(), "fhir")
        summary["ingest"] = [r.as_dict() for r in loaded]
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        for f in result.files:
            typer.echo(f"{f.uri}: {f.lines} lines, {f.size} bytes ({f.kind} {f.resource_type})")
        for row in summary.get("ingest", []):  # type: ignore[union-attr]
            typer.echo(
                f"{row['uri']}: read {row['read']}, loaded {row['loaded']},"
                f" quarantined {row['quarantined']}"
            )


mllp_app = typer.Typer(help="The HL7 v2 MLLP listener.", no_args_is_help=True)
app.add_typer(mllp_app, name="mllp")


@mllp_app.command("serve")
def mllp_serve(
    spool: Path = typer.Option(..., "--spool", help="Spool folder (the MLLP inbound drop)."),
    port: int = typer.Option(2575, "--port", help="TCP port on loopback (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Loopback address to bind."),
    max_frame_bytes: int = typer.Option(8 << 20, "--max-frame-bytes", min=1024),
) -> None:
    """Receive HL7 v2 over MLLP; persist each message to the spool, then ACK (AA/AE/AR)."""
    from connectors.hl7.mllp import serve

    def ready(bound_host: str, bound_port: int) -> None:
        console.print(f"MLLP listening on {bound_host}:{bound_port}, spool {spool}")

    stats = serve(spool, host=host, port=port, max_frame_bytes=max_frame_bytes, on_ready=ready)
    console.print(f"MLLP stopped: {stats.frames} frames, acks {stats.acks}")


def main() -> None:
    """Entry point that turns unexpected errors into one PHI-free line."""
    try:
        app()
    except SystemExit:
        raise
    except Exception as error:
        if os.environ.get("HUB_DEBUG"):
            raise
        console.print(
            f"[red]error:[/] {type(error).__name__} in {_where(error)}."
            " Re-run with HUB_DEBUG=1 for details (may include record values)."
        )
        sys.exit(2)


def _where(error: BaseException) -> str:
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown location"
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"

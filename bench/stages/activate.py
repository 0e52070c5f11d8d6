"""Activation stages against the SANDBOX engine over HTTPS: diff sync (full and 1% changed),
a full re-push baseline (consent gate kept, no diff, no ledger), the engine's own limit
(members pushed from memory) and events readback."""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter, sleep

from bench.measure import StageResult
from bench.stages.protect import protector_from


def _engine(endpoint: dict):
    from connectors.email.http_api import HttpEngine

    return HttpEngine(
        endpoint["base_url"], endpoint["token"], endpoint["signing_secret"], endpoint["ca_file"]
    )


def _audiences(conn) -> list[str]:
    return [a for (a,) in conn.execute("select audience from marts.segment_catalog order by 1")]


def _members(conn) -> int:
    return conn.execute("select count(*) from marts.audience_membership").fetchone()[0]


def approve_all(conn, manifest: Path) -> int:
    """Record the review every marketing audience needs before its first send (services.
    approvals), as marketing ops would with `hub approve`; bound to the bench's manifest."""
    from services.approvals import approval_status, approve

    approved = 0
    for audience in _audiences(conn):
        status = approval_status(conn, audience, "*", manifest)
        if status.required and not status.approved:
            approve(conn, audience, "bench", "benchmark on synthetic data", manifest_path=manifest)
            approved += 1
    conn.commit()
    return approved


def sync_all(
    warehouse, keyring: str, endpoint: dict, destination: str, manifest: str
) -> StageResult:
    """services.sync.sync_audiences over every audience (mirror mode, default batch size and
    concurrency, as the activation asset runs it); marketing audiences approved first."""
    from services.sync import sync_audiences

    cipher = protector_from(keyring).cipher
    engine = _engine(endpoint)
    totals = {"added": 0, "updated": 0, "removed": 0, "excluded": 0, "rejected": 0}
    with warehouse.connect() as conn:
        approve_all(conn, Path(manifest))
        members = _members(conn)
        audiences = _audiences(conn)
        started = perf_counter()
        for result in sync_audiences(
            conn, engine, cipher, audiences, destination=destination, manifest_path=Path(manifest)
        ):
            summary = result.as_dict()
            for key in totals:
                totals[key] += summary[key]
        seconds = perf_counter() - started
    return {"seconds": seconds, "records": members, **totals}


def change_contacts(warehouse, keyring: str, destination: str, share: float, seed: int) -> int:
    """Give `share` of the synced people a new email address in the vault (as a CRM update
    would), so the next diff sync has that many updates. Returns the people changed."""
    from connectors.warehouse.changes import writer_epoch

    cipher = protector_from(keyring).cipher
    with warehouse.connect() as conn:
        people = [
            p
            for (p,) in conn.execute(
                "select person_token from (select distinct person_token from"
                " activation.sync_state where destination = %s) s"
                " order by md5(person_token || %s::text) limit"
                " greatest(1, (select round(count(distinct person_token) * %s)::int"
                " from activation.sync_state where destination = %s))",
                (destination, seed, share, destination),
            )
        ]
        rows = conn.execute(
            "select v.subject_token, v.key_version, v.ciphertext from landing.person_xref x"
            " join vault.contact_fields v on v.subject_token = x.subject_token"
            " where x.person_token = any(%s) and v.column_name = 'email'",
            (people,),
        ).fetchall()
        with conn.transaction(), conn.cursor() as cur:
            epoch = writer_epoch(conn)  # stamped as the loader stamps what it writes
            for subject, version, blob in rows:
                email = cipher.decrypt(subject, "email", version, blob)
                new_version, new_blob = cipher.encrypt(subject, "email", f"m{seed}.{email}")
                cur.execute(
                    "update vault.contact_fields set key_version = %s, ciphertext = %s,"
                    " change_epoch = %s where subject_token = %s and column_name = 'email'",
                    (new_version, new_blob, epoch, subject),
                )
    return len(people)


def settle(warehouse, quiet_for: float = 3.0, limit: float = 600.0) -> float:
    """Wait until no autovacuum worker has run in the warehouse's database for `quiet_for`
    seconds (at most `limit`); returns the seconds waited. A full sync leaves about 800,000
    new sync_state rows and as many superseded ledger versions at 1M, which autovacuum then
    works through for a minute or more on this 2-core machine; between scheduled syncs it
    is long done, so an incremental run is timed after it, and the wait is reported."""
    started = perf_counter()
    quiet_since = started
    with warehouse.connect() as conn:
        conn.autocommit = True
        while perf_counter() - quiet_since < quiet_for and perf_counter() - started < limit:
            busy = conn.execute(
                "select count(*) from pg_stat_activity where backend_type = 'autovacuum worker'"
                " and datname = current_database()"
            ).fetchone()[0]
            if busy:
                quiet_since = perf_counter()
            sleep(0.5)
    return perf_counter() - started


def sync_changed(
    warehouse,
    keyring: str,
    endpoint: dict,
    destination: str,
    manifest: str,
    share: float,
    seed: int,
) -> StageResult:
    """Incremental diff sync after `share` of the synced people changed (the change, and the
    wait for autovacuum to finish with what came before, untimed)."""
    changed = change_contacts(warehouse, keyring, destination, share, seed)
    waited = settle(warehouse)
    out = sync_all(warehouse, keyring, endpoint, destination, manifest)
    out["people_changed"] = changed
    out["autovacuum_wait_s"] = round(waited, 1)
    return out


def repush_all(warehouse, keyring: str, endpoint: dict, manifest: str) -> StageResult:
    """Baseline: every consent-gated member of every audience pushed again, in batches, with
    no diff and no ledger: what a sync without state would do on every run. The consent
    gate, the marketing approval and the DLP check still apply: no path here skips them."""
    from connectors.email.base import Member
    from domain.send_dlp import check_payload
    from services.approvals import approval_status
    from services.sync import BATCH_SIZE, CONTACT_COLUMN, audience_definition, gate
    from services.vault_reader import read_contacts

    cipher = protector_from(keyring).cipher
    engine = _engine(endpoint)
    day = datetime.now(UTC).date()
    pushed = 0
    with warehouse.connect() as conn:
        members_total = _members(conn)
        audiences = _audiences(conn)
        started = perf_counter()
        for audience in audiences:
            if not approval_status(conn, audience, "*", Path(manifest)).may_send:
                continue
            definition = audience_definition(conn, audience)
            members = [
                p
                for (p,) in conn.execute(
                    "select person_token from marts.audience_membership where audience = %s"
                    " order by person_token",
                    (audience,),
                )
            ]
            decisions = gate(conn, members, definition.purpose, day)
            allowed = [p for p in members if decisions[p].allowed]
            columns = [CONTACT_COLUMN, *definition.personalization_fields]
            contacts = read_contacts(
                conn, cipher, allowed, columns, definition.purpose, f"re-push {audience}"
            )
            conn.commit()
            batch: list[Member] = []
            run = uuid.uuid4().hex[:12]
            for person in allowed:
                contact = contacts.get(person, {})
                if not contact.get(CONTACT_COLUMN):
                    continue
                fields = {f: contact.get(f) for f in definition.personalization_fields}
                if check_payload(
                    contact[CONTACT_COLUMN], fields, definition.personalization_fields
                ):
                    continue  # the send-time DLP check refuses it, as in the sync
                batch.append(Member(person, contact[CONTACT_COLUMN], fields))
                if len(batch) >= BATCH_SIZE:
                    engine.upsert(audience, batch, idempotency_key=f"repush-{run}-{pushed}")
                    pushed += len(batch)
                    batch = []
            if batch:
                engine.upsert(audience, batch, idempotency_key=f"repush-{run}-{pushed}")
                pushed += len(batch)
        seconds = perf_counter() - started
    return {"seconds": seconds, "records": members_total, "pushed": pushed}


def push_limit(warehouse, folder: str) -> StageResult:
    """Limit for sync: a fresh SANDBOX engine taking as many new members as the audiences
    hold, in batches built in memory (synthetic addresses: no gate, no vault, no ledger, no
    diff), one request at a time as the sync sends them. Every member is new, as in a first
    sync, so the engine does the same work per member (it records the simulated send); its
    own engine keeps those events away from the readback stage."""
    from bench.workspace import SandboxProcess
    from connectors.email.base import Member
    from services.sync import BATCH_SIZE

    with warehouse.connect() as conn:
        members = _members(conn)
    sandbox = SandboxProcess(Path(folder))
    try:
        engine = _engine(sandbox.endpoint)
        engine.ensure_audience("bench_push_limit", "bench_push_limit", "treatment")
        started = perf_counter()
        for start in range(0, members, BATCH_SIZE):
            batch = [
                Member(f"limit-{i:09d}", f"member{i}@example.org", {"given_name": "Ann"})
                for i in range(start, min(start + BATCH_SIZE, members))
            ]
            engine.upsert("bench_push_limit", batch, idempotency_key=f"limit-{start}")
        seconds = perf_counter() - started
    finally:
        sandbox.stop()
    return {"seconds": seconds, "records": members}


def read_events(warehouse, endpoint: dict, destination: str) -> StageResult:
    """services.feedback.read_feedback from the first event (earlier reads cleared)."""
    from services.feedback import read_feedback

    engine = _engine(endpoint)
    with warehouse.connect() as conn:
        _forget_destination(conn, destination)
        started = perf_counter()
        result = read_feedback(conn, engine, destination)
        seconds = perf_counter() - started
    return {"seconds": seconds, "records": result.read, "new": result.new}


def read_extract(warehouse, folder: str, source: str, destination: str) -> StageResult:
    """read_feedback from a sealed NDJSON tracking extract (the file-exchange way back) of
    the events polling stored for `source`, under new ids and destination `destination`.
    Writing the extract is not timed; the destination's rows are removed after."""
    from connectors.email.envelope import EnvelopeWriter
    from connectors.email.file_exchange import FileExchangeEngine
    from services.feedback import read_feedback

    key, inbox = os.urandom(32), Path(folder) / "extract-inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    with warehouse.connect() as conn:
        _forget_destination(conn, destination)
        with (
            open(inbox / "tracking.ndjson.ahx", "wb") as sink,
            EnvelopeWriter(sink, key, "bench") as sealed,
            conn.cursor(name="bench_extract") as cur,
        ):
            cur.itersize = 50_000
            cur.execute(_EXTRACT_LINES, (source,))
            while lines := cur.fetchmany(50_000):
                sealed.write("".join(f"{line}\n" for (line,) in lines).encode())
        conn.commit()
        exchange = FileExchangeEngine(str(Path(folder) / "extract-outbox"), str(inbox),
                                      {"bench": key}, "bench")  # fmt: skip
        started = perf_counter()
        result = read_feedback(conn, exchange, destination)
        seconds = perf_counter() - started
        _forget_destination(conn, destination)
    (inbox / "tracking.ndjson.ahx").unlink()
    return {"seconds": seconds, "records": result.read, "new": result.new}


# An extract line per stored event, as a marketing cloud would write it (jsonb's text form:
# `"key": "value"`; absent values left out).
_EXTRACT_LINES = (
    "select jsonb_strip_nulls(jsonb_build_object('event_id', 'x:' || event_id,"
    " 'event_type', event_type, 'external_id', person_token, 'audience_id', audience,"
    " 'occurred_at', to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " 'bounce_type', bounce_type, 'machine_open', case when machine_open then 'true' end))::text"
    " from engagement.events where destination = %s order by occurred_at, event_id"
)


def _forget_destination(conn, destination: str) -> None:
    """Remove what an earlier repeat read for `destination`, and vacuum (untimed), so that
    every readback starts from settled tables:
    - a repeat stores the same event ids again, and without the vacuum each insert's unique
      check visits the deleted rows under the same id (PostgreSQL's CPU up 10-15%), a cost
      no readback pays in production, where an id arrives once;
    - the readback before this one (polling, then the extract of what it stored) inserted
      as many events, and autovacuum would otherwise take them up during the timed read,
      on the cores the readback uses."""
    with conn.transaction():
        for table in ("engagement.suppressions", "engagement.events", "engagement.cursors"):
            conn.execute(f"delete from {table} where destination = %s", (destination,))
    autocommit, conn.autocommit = conn.autocommit, True  # VACUUM runs outside a transaction
    try:
        conn.execute("vacuum analyze engagement.suppressions, engagement.events")
    finally:
        conn.autocommit = autocommit


def copy_events(warehouse) -> StageResult:
    """Limit for readback: COPY (binary) of the same event rows into an empty table."""
    with warehouse.connect() as conn:
        conn.execute("drop table if exists public.bench_events")
        conn.execute("create table public.bench_events (like engagement.events)")
        fd, path = tempfile.mkstemp(prefix="bench-events-")
        try:
            out_query = "copy engagement.events to stdout (format binary)"
            with os.fdopen(fd, "wb") as sink, conn.cursor() as cur, cur.copy(out_query) as copy:
                for block in copy:
                    sink.write(block)
            rows = conn.execute("select count(*) from engagement.events").fetchone()[0]
            conn.commit()
            started = perf_counter()
            in_query = "copy public.bench_events from stdin (format binary)"
            with (
                conn.transaction(),
                conn.cursor() as cur,
                open(path, "rb") as dump,
                cur.copy(in_query) as copy,
            ):
                while block := dump.read(1 << 20):
                    copy.write(block)
            seconds = perf_counter() - started
        finally:
            os.unlink(path)
        conn.execute("drop table public.bench_events")
        conn.commit()
    return {"seconds": seconds, "records": rows}

"""Sync and feedback at scale, in isolation: N contacts straight into the warehouse tables the
sync reads, the SANDBOX engine in its own process over HTTPS on loopback, then

  full diff sync  ->  no-change sync  ->  1%-changed incremental sync  ->  full re-push
  baseline (no diff, no ledger)  ->  event readback by cursor polling  ->  event readback
  from a tracking extract file (NDJSON, sealed)

    python -m bench.sync_feedback --contacts 100000 [--events-file 1000000] [--profile]

Prints a JSON summary and a Markdown table (the "Sync and feedback" section of
BENCHMARKS.md). Data is synthetic (example.org addresses); state lives under --state.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import psycopg

from connectors.email.base import Member
from connectors.email.envelope import EnvelopeWriter
from connectors.email.file_exchange import FileExchangeEngine
from connectors.email.http_api import HttpEngine
from connectors.warehouse.changes import writer_epoch
from connectors.warehouse.database import Warehouse
from connectors.warehouse.embedded import database_options
from domain.keys import KeyringFileProvider
from services.feedback import read_feedback
from services.sync import sync_audience
from services.vault_reader import read_contacts

TOKEN, SECRET = "bench-token", "bench-signing-secret"
AUDIENCE = "bench_flu"
DAY = dt.date(2026, 3, 2)
STAND_INS = """
create schema if not exists marts;
create schema if not exists intermediate;
create table marts.segment_catalog (audience text primary key, segment_model text,
    purpose text not null, description text, owner text, personalization_fields text[]);
create table marts.audience_membership (audience text, person_token text, purpose text,
    consent_ref text, evaluated_on date, primary key (audience, person_token));
create table intermediate.int_consent_events (person_token text not null, purpose text,
    event_type text not null, effective_on date not null, expires_on date, source_ref text);
"""
# dbt's digest per person (dbt_project/models/intermediate/consent/int_consent_digests.sql),
# with the events as the send gate reads them, built once the events are seeded; stamped
# with epoch 0, as a full build before the first sync leaves them.
DIGESTS = """
create table intermediate.int_consent_digests as
select person_token, count(*)::text || ':' || sum(hashtextextended(
        row(event_type, effective_on, purpose, expires_on, source_ref)::text, 0))::text
        as events_digest,
    json_agg(json_build_array(event_type, effective_on, purpose, expires_on, source_ref)
        order by effective_on, event_type, purpose, expires_on, source_ref)::text as events,
    0::bigint as change_epoch
from intermediate.int_consent_events group by person_token;
alter table intermediate.int_consent_digests add primary key (person_token);
create index on intermediate.int_consent_digests (change_epoch);
"""


def person(i: int) -> str:
    return f"p{i:08d}"


def given_name(i: int) -> str:
    """A letters-only name per person: digits in a name field would (rightly) fail the DLP
    check as a long number."""
    letters = []
    while True:
        i, r = divmod(i, 26)
        letters.append(chr(97 + r))
        if not i:
            return "N" + "".join(letters)


def fresh_database(state: Path, name: str) -> Warehouse:
    base = Warehouse(None, state)
    with psycopg.connect(base.url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}"')
        # Created as the hub creates its own database (byte-order collation).
        (ctype,) = conn.execute(
            "select datctype from pg_database where datname = current_database()"
        ).fetchone()
        conn.execute(f'create database "{name}" {database_options(ctype)}')
    url = base.url()
    start = url.index("/", url.index("//") + 2)
    query = url.find("?", start)
    warehouse = Warehouse(database_url=url[:start] + "/" + name + url[query:])
    warehouse.ensure_schema()
    with warehouse.connect() as conn:
        conn.execute(STAND_INS)
    return warehouse


def seed(warehouse: Warehouse, cipher, n: int) -> float:
    started = time.perf_counter()
    with warehouse.connect() as conn, conn.cursor() as cur:
        with cur.copy("copy landing.person_xref (subject_token, person_token) from stdin") as cp:
            for i in range(n):
                cp.write_row((f"s{i:08d}", person(i)))
        with cur.copy(
            "copy vault.contacts (subject_token, email, email_key_version, email_effective_at,"
            " given_name, given_name_key_version, given_name_effective_at) from stdin"
        ) as cp:
            now = dt.datetime.now(dt.UTC)
            for i in range(n):
                subject = f"s{i:08d}"
                email_version, email = cipher.encrypt(subject, "email", f"person{i}@example.org")
                name_version, name = cipher.encrypt(subject, "given_name", given_name(i))
                cp.write_row((subject, email, email_version, now, name, name_version, now))
        with cur.copy(
            "copy intermediate.int_consent_events (person_token, purpose, event_type,"
            " effective_on, source_ref) from stdin"
        ) as cp:
            for i in range(n):
                cp.write_row((person(i), None, "opt_in", dt.date(2025, 1, 1), f"o{i}"))
                cp.write_row((person(i), "treatment", "permit", dt.date(2025, 1, 1), f"c{i}"))
        cur.execute("create index on intermediate.int_consent_events (person_token)")
        cur.execute(DIGESTS)
        with cur.copy("copy marts.audience_membership (audience, person_token) from stdin") as cp:
            for i in range(n):
                cp.write_row((AUDIENCE, person(i)))
        cur.execute(
            "insert into marts.segment_catalog values (%s, 'seg_bench', 'treatment', 'bench',"
            " 'bench', array['given_name'])",
            (AUDIENCE,),
        )
        conn.commit()
        cur.execute("analyze")
    return time.perf_counter() - started


def start_sandbox(state: Path) -> tuple[subprocess.Popen, dict]:
    folder = state / "sandbox"
    shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, "SANDBOX_ENGINE_TOKEN": TOKEN, "SANDBOX_ENGINE_SIGNING_SECRET": SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--state-dir", str(folder), "--port", "0",
         "--log-level", "WARNING"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()
    endpoint = json.loads((folder / "endpoint.json").read_text())
    return proc, endpoint


def engine_for(endpoint: dict) -> HttpEngine:
    return HttpEngine(endpoint["base_url"], TOKEN, SECRET, endpoint["ca_cert"], timeout=60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children, live or exited (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid:  # its own time and that of children it has reaped
            total += sum(int(f) for f in fields[11:15]) / ticks
        elif int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class Meters:
    """CPU seconds of the hub (this process), its PostgreSQL and the SANDBOX engine: the
    machine is shared, so wall time alone says little about where the work went."""

    def __init__(self, state: Path) -> None:
        self.postmaster = int((state / "pg" / "postmaster.pid").read_text().split()[0])
        self.sandbox: int | None = None

    def read(self) -> dict[str, float]:
        out = {"hub": time.process_time(), "postgres": cpu_seconds(self.postmaster)}
        if self.sandbox is not None:
            out["sandbox"] = cpu_seconds(self.sandbox)
        return out


METERS: Meters | None = None


def timed(label: str, results: dict, fn, profile: bool = False):
    profiler = cProfile.Profile() if profile else None
    before = METERS.read() if METERS else {}
    load = os.getloadavg()[0]
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    out = fn()
    if profiler:
        profiler.disable()
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(25)
        print(f"--- profile {label} ---\n{stream.getvalue()}", file=sys.stderr)
    results[label] = {"seconds": round(time.perf_counter() - started, 3), **(out or {})}
    after = METERS.read() if METERS else {}
    used = {k: round(after[k] - before[k], 1) for k in after if k in before}
    results[label]["cpu_seconds"] = used
    results[label]["load_average"] = round((load + os.getloadavg()[0]) / 2, 1)
    print(f"{label}: {results[label]}", file=sys.stderr, flush=True)
    return out


def change_share(warehouse: Warehouse, cipher, n: int, share: float) -> int:
    changed = max(1, int(n * share))
    step = n // changed
    with warehouse.connect() as conn, conn.cursor() as cur:
        epoch = writer_epoch(conn)  # stamped as the loader stamps what it writes
        for k in range(changed):
            subject = f"s{k * step:08d}"
            version, blob = cipher.encrypt(subject, "given_name", "C" + given_name(k))
            cur.execute(
                "update vault.contact_fields set key_version = %s, ciphertext = %s,"
                " change_epoch = %s where subject_token = %s and column_name = 'given_name'",
                (version, blob, epoch, subject),
            )
        conn.commit()
    return changed


def repush(warehouse: Warehouse, cipher, endpoint: dict, n: int) -> dict:
    """Baseline: decrypt everyone and push everyone again, 1000 per request, no diff, no
    ledger, one request at a time (what a stateless sync does on every run)."""
    engine = engine_for(endpoint)
    run = uuid.uuid4().hex[:8]
    pushed = 0
    with warehouse.connect() as conn:
        people = [p for (p,) in conn.execute(
            "select person_token from marts.audience_membership order by 1")]  # fmt: skip
        for start in range(0, len(people), 10_000):
            part = people[start : start + 10_000]
            contacts = read_contacts(
                conn, cipher, part, ["email", "given_name"], "treatment", "bench re-push"
            )
            for b in range(0, len(part), 1000):
                members = [
                    Member(p, contacts[p]["email"], {"given_name": contacts[p]["given_name"]})
                    for p in part[b : b + 1000]
                ]
                engine.upsert(AUDIENCE, members, f"repush-{run}-{start + b}")
                pushed += len(members)
        conn.commit()
    return {"pushed": pushed}


def write_extract(folder: Path, key: bytes, events: int, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "2026-03-02-tracking.ndjson.ahx"
    kinds = ("sent", "delivered", "open", "click", "bounce", "unsubscribe")
    with open(path, "wb") as sink, EnvelopeWriter(sink, key, "bench") as sealed:
        chunk = []
        for e in range(events):
            kind = kinds[e % len(kinds)]
            row = {
                "event_id": f"x{e}",
                "event_type": kind,
                "external_id": person(e % n),
                "audience_id": AUDIENCE,
                "occurred_at": "2026-03-02T09:00:00Z",
            }
            if kind == "bounce":
                row["bounce_type"] = "hard" if e % 12 == 4 else "soft"
            chunk.append(orjson.dumps(row))
            if len(chunk) == 10_000:
                sealed.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            sealed.write(b"\n".join(chunk) + b"\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_feedback")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--events-file", type=int, default=1_000_000)
    parser.add_argument("--state", default="/tmp/hub-bench-sync")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    n = args.contacts
    cipher = KeyringFileProvider(state / "keyring.json").vault_cipher()
    warehouse = fresh_database(state, f"bench_sync_{n}")
    results: dict[str, dict] = {"machine": {"cores": os.cpu_count(), "contacts": n}}
    results["seed"] = {"seconds": round(seed(warehouse, cipher, n), 1)}
    global METERS
    METERS = Meters(state)
    proc, endpoint = start_sandbox(state)
    METERS.sandbox = proc.pid
    try:

        def sync(dry_run: bool = False) -> dict:
            with warehouse.connect() as conn:
                r = sync_audience(
                    conn, engine_for(endpoint), cipher, destination="sandbox",
                    audience=AUDIENCE, day=DAY, concurrency=args.concurrency, dry_run=dry_run,
                )  # fmt: skip
            return {k: v for k, v in r.as_dict().items() if k in ("added", "updated", "removed")}

        timed("sync.full", results, sync, args.profile)
        timed("sync.no_change", results, sync)
        changed = change_share(warehouse, cipher, n, 0.01)
        timed("sync.incremental_1pct", results, sync, args.profile)
        results["sync.incremental_1pct"]["changed"] = changed
        timed("baseline.full_repush", results, lambda: repush(warehouse, cipher, endpoint, n))

        def poll() -> dict:
            with warehouse.connect() as conn:
                r = read_feedback(conn, engine_for(endpoint), "sandbox")
            return {"events": r.read, "new": r.new}

        timed("events.polling", results, poll, args.profile)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    key = os.urandom(32)
    inbox = state / "inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    write_extract(inbox, key, args.events_file, n)

    def extract() -> dict:
        exchange = FileExchangeEngine(str(state / "outbox"), str(inbox), {"bench": key}, "bench")
        with warehouse.connect() as conn:
            r = read_feedback(conn, exchange, "files")
        return {"events": r.read, "new": r.new}

    timed("events.extract_file", results, extract, args.profile)
    for row in results.values():
        events = row.get("events") or row.get("added") or row.get("pushed")
        if events and row.get("seconds"):
            row["per_second"] = round(events / row["seconds"])
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

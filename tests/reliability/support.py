"""The reliability harness: scratch databases, state snapshots, killable workers, bulk audiences.

Scratch databases live on the session's embedded PostgreSQL (one server, many databases):
`CREATE DATABASE ... TEMPLATE` copies a prepared state in a fraction of a second, so every
fault or kill runs on its own copy and is compared with an uninterrupted run on another.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from connectors.warehouse.database import Warehouse
from domain.vault_cipher import VaultCipher

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DBT = str(Path(sys.executable).parent / "dbt")
DBT_PROJECT = REPO_ROOT / "dbt_project"

# Columns that differ between two equally correct runs: surrogate keys, sequence values
# (a rolled-back transaction still consumes them), wall-clock stamps and run identifiers.
VOLATILE_COLUMNS = frozenset(
    {
        "row_id",
        "file_id",
        "loaded_at",
        "quarantine_id",
        "quarantined_at",
        "updated_at",
        "resolved_at",
        "replay_file_id",
        "replayed_at",
        "run_id",
        "ledger_id",
        "batch_key",
        "created_at",
        "acked_at",
        "synced_at",
        "started_at",
        "finished_at",
        "received_at",
        "audit_id",
        "at",
        "hash",
        "prev_hash",
        "actor",
        "approved_at",
        "voided_at",
        "xact_id",
    }
)
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def database_url(url: str, name: str) -> str:
    """The same server URL with another database name."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Databases:
    """Create, clone and drop scratch databases on the session's PostgreSQL server."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.server_url = warehouse.url()
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return database_url(self.server_url, name)

    def create(self, name: str, template: str | None = None) -> Warehouse:
        """A fresh database (a copy of `template` when given); an older one is dropped first."""
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
            clause = f' template "{template}"' if template else ""
            conn.execute(f'create database "{name}"{clause}')
        self.created.append(name)
        return Warehouse(database_url=self.url(name), state_path=None)

    def rename(self, name: str, new_name: str) -> None:
        """Rename (ending any session still connected to it: renames need it idle)."""
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{new_name}" with (force)')
            for attempt in range(20):
                conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s",
                    (name,),
                )
                try:
                    conn.execute(f'alter database "{name}" rename to "{new_name}"')
                    break
                except psycopg.errors.ObjectInUse:
                    if attempt == 19:
                        raise
                    time.sleep(0.05)
        self.created = [new_name if n == name else n for n in self.created]

    def drop(self, name: str) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self.drop(name)
        self.created.clear()


# --- state snapshots -------------------------------------------------------------------------


def relations(conn: psycopg.Connection, schemas: Iterable[str]) -> list[str]:
    rows = conn.execute(
        "select table_schema || '.' || table_name from information_schema.tables"
        " where table_schema = any(%s) order by 1",
        (list(schemas),),
    )
    return [name for (name,) in rows]


def table_content(conn: psycopg.Connection, relation: str) -> Counter[str]:
    """The rows of a table or view as a multiset of JSON texts, volatile and bytea columns out."""
    schema, table = relation.split(".")
    dropped = [
        name
        for (name,) in conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = %s and table_name = %s"
            " and (column_name = any(%s) or data_type = 'bytea')",
            (schema, table, sorted(VOLATILE_COLUMNS)),
        )
    ]
    rows = conn.execute(
        f'select (to_jsonb(t) - %s::text[])::text from "{schema}"."{table}" t', (dropped,)
    )
    return Counter(text for (text,) in rows)


def vault_content(conn: psycopg.Connection, cipher: VaultCipher) -> Counter[tuple]:
    """Vault rows with their plaintext (ciphertexts differ per run: fresh nonces)."""
    rows = conn.execute(
        "select subject_token, column_name, key_version, ciphertext, effective_at"
        " from vault.contact_fields"
    )
    return Counter(
        (subject, column, cipher.decrypt(subject, column, version, bytes(blob)), str(effective))
        for subject, column, version, blob, effective in rows
    )


def quarantine_content(conn: psycopg.Connection, cipher: VaultCipher) -> Counter[tuple]:
    """Quarantined records: file (by content hash), position, reason, message, raw payload."""
    rows = conn.execute(
        "select f.sha256, q.file_id, q.source, q.position, q.entity, q.reason, q.message,"
        " q.payload_key_version, q.payload"
        " from quarantine.records q join landing.source_files f using (file_id)"
    )
    content: Counter[tuple] = Counter()
    for sha, file_id, source, position, entity, reason, message, version, blob in rows:
        payload = (
            cipher.decrypt_bytes(f"quarantine:{file_id}", position, version, bytes(blob))
            if blob is not None
            else b""
        )
        content[(sha, source, position, entity, reason, message, payload)] += 1
    return content


def audit_content(conn: psycopg.Connection) -> Counter[tuple]:
    rows = conn.execute("select action, object, row_count from audit.events")
    return Counter(tuple(row) for row in rows)


def snapshot(
    conn: psycopg.Connection,
    cipher: VaultCipher,
    schemas: Sequence[str] = ("landing", "vault", "quarantine"),
    audit: bool = True,
) -> dict[str, Counter]:
    """Everything a run produced in `schemas`, comparable across two runs of the same work."""
    state: dict[str, Counter] = {}
    for relation in relations(conn, schemas):
        if relation == "vault.contact_fields":
            state[relation] = vault_content(conn, cipher)
        elif relation == "quarantine.records":
            state[relation] = quarantine_content(conn, cipher)
        else:
            state[relation] = table_content(conn, relation)
    if audit:
        state["audit.events"] = audit_content(conn)
    return state


def differences(expected: dict[str, Counter], actual: dict[str, Counter]) -> dict[str, str]:
    """Per relation: how many rows are missing and how many are extra (empty when equal)."""
    report = {}
    for relation in sorted(set(expected) | set(actual)):
        want, got = expected.get(relation, Counter()), actual.get(relation, Counter())
        if want != got:
            missing, extra = want - got, got - want
            report[relation] = (
                f"{sum(missing.values())} missing, {sum(extra.values())} extra"
                f" (expected {sum(want.values())} rows, found {sum(got.values())})"
            )
    return report


def counts(state: dict[str, Counter]) -> dict[str, int]:
    return {relation: sum(rows.values()) for relation, rows in state.items()}


# --- killable workers ------------------------------------------------------------------------


@dataclass
class WorkerRun:
    returncode: int
    killed: bool  # SIGKILL landed while the work was still running
    seconds: float  # from "ready" to exit or kill (for choosing the next kill point only)
    output: str  # stdout and stderr, interleaved (for failure messages)
    marker_seen: bool = True  # the child said "ready" (False: it ended before saying so)


def worker_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a child process: same warehouse, same keys, no stray settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HUB_ENGINE_", "PYTEST_", "HUB_BACKUP_"))
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "PYTHONPATH": str(REPO_ROOT),
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_worker(
    args: Sequence[str],
    env: dict[str, str],
    kill_after: float | None = None,
    ready_marker: str | None = "ready",
    timeout: float = 600,
    cwd: Path = REPO_ROOT,
) -> WorkerRun:
    """Run a child to completion, or SIGKILL it `kill_after` seconds after it said "ready".

    Python workers print the marker once imports and connections are done (dbt prints
    "START" as it starts its first model), so the random delay lands in the work itself
    rather than in interpreter start-up and project parsing. Output is drained by a thread
    so a chatty child never blocks on a full pipe.
    """
    process = subprocess.Popen(
        list(args),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()
    seen = [ready_marker is None]
    if ready_marker is None:
        ready.set()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if not seen[0] and ready_marker is not None and ready_marker in line:
                seen[0] = True
                ready.set()
        ready.set()  # the child ended (or closed its output) without the marker

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    ready.wait(timeout)
    started = time.monotonic()
    killed = False
    try:
        if kill_after is None:
            process.wait(timeout=timeout)
        else:
            try:
                process.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the child and anything it started
                killed = True
                process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    seconds = time.monotonic() - started
    reader.join(30)
    return WorkerRun(process.returncode, killed, seconds, "".join(lines), seen[0])


def python_worker(*args: str) -> list[str]:
    return [PYTHON, "-m", "tests.reliability.workers", *args]


def dbt_args(command: str, target: Path) -> list[str]:
    """`dbt <command>` on the project, artifacts and logs in `target` (never the shared ones)."""
    return [
        DBT,
        command,
        "--project-dir",
        str(DBT_PROJECT),
        "--profiles-dir",
        str(DBT_PROJECT),
        "--target-path",
        str(target / "target"),
        "--log-path",
        str(target / "logs"),
    ]


def kill_points(rng: random.Random, duration: float, n: int) -> list[float]:
    """n delays spread over the work (stratified, so early, middle and late kills all occur)."""
    return [duration * (i + rng.random()) / n for i in range(n)]


# --- bulk audiences --------------------------------------------------------------------------

BULK_AUDIENCE = "reliability_bulk"


def add_bulk_audience(
    conn: psycopg.Connection,
    cipher: VaultCipher,
    members: int,
    audience: str = BULK_AUDIENCE,
    purpose: str = "plan_benefits",
    day: str = "2000-01-01",
) -> list[str]:
    """Add an audience of `members` consented synthetic people to a built warehouse.

    Everything the send step reads is written where dbt would have put it: the catalogue,
    the membership mart, consent events (a written authorization + email opt-in) and
    vault-encrypted email addresses, so the push-time gate and the vault read run for real.
    The default purpose needs a permit (so the gate has work) but no human review before
    the first send (marketing audiences wait for an approval; see services/approvals.py).
    """
    people = [f"tbulk_{audience}_{i:07d}" for i in range(members)]
    conn.execute(
        "insert into marts.segment_catalog (audience, segment_model, purpose, description,"
        " personalization_fields) values (%s, %s, %s, 'reliability harness', '{}')",
        (audience, f"seg_{audience}", purpose),
    )
    with conn.cursor() as cur:
        with cur.copy("copy landing.person_xref (subject_token, person_token) from stdin") as copy:
            for person in people:
                copy.write_row((person, person))
        with cur.copy(
            "copy vault.contact_fields (subject_token, column_name, key_version, ciphertext)"
            " from stdin"
        ) as copy:
            for i, person in enumerate(people):
                version, blob = cipher.encrypt(person, "email", f"bulk{i}@example.org")
                copy.write_row((person, "email", version, blob))
        with cur.copy(
            "copy marts.audience_membership (audience, person_token, purpose, evaluated_on)"
            " from stdin"
        ) as copy:
            for person in people:
                copy.write_row((audience, person, purpose, day))
        with cur.copy(
            "copy intermediate.int_consent_events (person_token, purpose, event_type,"
            " effective_on, source, source_ref) from stdin"
        ) as copy:
            for person in people:
                copy.write_row((person, purpose, "permit", day, "crm", f"ref-{person}"))
                copy.write_row((person, None, "opt_in", day, "crm", f"ref-{person}"))
    conn.commit()
    return people


# --- exactly once at the engine --------------------------------------------------------------


class CountingDelivery:
    """A SANDBOX delivery sink that counts sends per (audience, member): the "delivered" fact."""

    def __init__(self) -> None:
        self.sends: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def deliver(self, audience_id: str, external_id: str, email: str, fields: object) -> None:
        with self._lock:
            self.sends[(audience_id, external_id)] += 1

    def of(self, audience: str) -> Counter[str]:
        return Counter({m: n for (a, m), n in self.sends.items() if a == audience})


@dataclass
class DeliveryReport:
    at_engine: int
    duplicates_at_engine: int
    missing_at_engine: int
    extra_at_engine: int
    sends_not_once: int
    pending_ledger_rows: int
    people_not_acked_once: int

    @property
    def lost(self) -> int:
        return self.missing_at_engine

    @property
    def duplicated(self) -> int:
        return self.duplicates_at_engine + self.sends_not_once


def delivery_report(
    conn: psycopg.Connection,
    member_ids: list[str],
    sends: Counter[str],
    audience: str,
    expected: set[str],
    destination: str = "sandbox",
) -> DeliveryReport:
    """Compare what the engine holds and sent, and what the ledger says, with `expected`."""
    at_engine = set(member_ids)
    acked = dict(
        conn.execute(
            "select person_token, count(*) filter (where status = 'acked'"
            " and operation in ('add', 'update')) from activation.ledger"
            " where destination = %s and audience = %s group by 1",
            (destination, audience),
        ).fetchall()
    )
    pending = conn.execute(
        "select count(*) from activation.ledger where destination = %s and audience = %s"
        " and status = 'pending'",
        (destination, audience),
    ).fetchone()[0]
    return DeliveryReport(
        at_engine=len(at_engine),
        duplicates_at_engine=len(member_ids) - len(at_engine),
        missing_at_engine=len(expected - at_engine),
        extra_at_engine=len(at_engine - expected),
        sends_not_once=sum(1 for p in expected if sends.get(p) != 1) + len(set(sends) - expected),
        pending_ledger_rows=pending,
        people_not_acked_once=sum(1 for p in expected if acked.get(p) != 1),
    )

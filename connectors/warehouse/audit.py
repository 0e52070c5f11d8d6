"""Writing and verifying the append-only, hash-chained audit log in PostgreSQL."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

import psycopg

from domain.audit_chain import GENESIS, AuditRecord, chain_hash

AUDIT_LOCK = 7262002


def record_audit(
    conn: psycopg.Connection,
    action: str,
    object_name: str,
    row_count: int = 0,
    purpose: str = "operations",
    role: str = "pipeline",
    actor: str | None = None,
) -> str:
    """Append one audit record inside the caller's transaction; returns its hash."""
    # One writer at a time, so every record chains to the true latest one.
    conn.execute("select pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
    row = conn.execute("select hash from audit.events order by audit_id desc limit 1").fetchone()
    previous = row[0] if row else GENESIS
    record = AuditRecord(
        at=datetime.now(UTC).replace(microsecond=0),
        actor=actor or getpass.getuser(),
        role=role,
        purpose=purpose,
        action=action,
        object=object_name,
        row_count=row_count,
    )
    own = chain_hash(previous, record)
    conn.execute(
        "insert into audit.events (at, actor, role, purpose, action, object, row_count,"
        " prev_hash, hash) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            record.at,
            record.actor,
            record.role,
            record.purpose,
            record.action,
            record.object,
            record.row_count,
            previous,
            own,
        ),
    )
    return own


def verify_chain(conn: psycopg.Connection) -> tuple[bool, int | None, int]:
    """(intact, first bad audit_id or None, records checked)."""
    previous = GENESIS
    checked = 0
    cursor = conn.execute(
        "select audit_id, at, actor, role, purpose, action, object, row_count, prev_hash, hash"
        " from audit.events order by audit_id"
    )
    for audit_id, at, actor, role, purpose, action, obj, rows, prev_hash, own in cursor:
        record = AuditRecord(at.astimezone(UTC), actor, role, purpose, action, obj, rows)
        if prev_hash != previous or chain_hash(previous, record) != own:
            return False, audit_id, checked
        previous = own
        checked += 1
    return True, None, checked

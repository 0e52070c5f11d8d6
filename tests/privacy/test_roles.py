"""Each database role reads what it needs and nothing more; tests log in as each one."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
from psycopg import errors

from connectors.warehouse.audit import record_audit, verify_chain
from connectors.warehouse.roles import HUB_ROLES

ANALYST_READABLE = [
    "marts.dim_persons",
    "marts.seg_flu_vaccine_due",
    "marts.agg_engagement_by_audience",
    "marts.audience_membership",
    "marts.audience_exclusions",
    "marts.segment_catalog",
]
ANALYST_FORBIDDEN = [
    "marts.fct_email_events",
    "landing.person_xref",
    "landing.patients",
    "vault.contact_fields",
    "vault.contacts",
    "vault.identity_keys",
    "quarantine.records",
    "activation.ledger",
    "activation.sync_state",
    "engagement.events",
    "audit.events",
    "intermediate.int_consent_events",
]


@pytest.fixture(scope="module")
def roles_db(make_database):
    """A database with analyst-tier and operational marts, and one LOGIN user per role."""
    warehouse = make_database()
    with warehouse.connect() as conn:
        conn.execute("create schema if not exists marts")
        conn.execute("create schema if not exists intermediate")
        for table in [*ANALYST_READABLE, "marts.fct_email_events"]:
            conn.execute(f"create table {table} (person_token text, audience text)")
        conn.execute(
            "create table intermediate.int_consent_events (person_token text, purpose text)"
        )
        conn.execute(
            "insert into landing.person_xref (subject_token, person_token)"
            " values ('t1_subject', 't1_person')"
        )
        conn.execute(
            "insert into vault.contact_fields (subject_token, column_name, key_version,"
            " ciphertext) values ('t1_subject', 'email', 1, '\\x00'::bytea)"
        )
    warehouse.ensure_schema()  # grants now cover the marts created above
    suffix = uuid.uuid4().hex[:8]
    users = {role: f"{role}_{suffix}" for role in HUB_ROLES}
    with psycopg.connect(warehouse.url(), autocommit=True) as conn:
        for role, user in users.items():
            conn.execute(f"create role {user} login in role {role}")
    yield warehouse, users
    with psycopg.connect(warehouse.url(), autocommit=True) as conn:
        for user in users.values():
            conn.execute(f"drop owned by {user}")
            conn.execute(f"drop role {user}")


def _connect_as(warehouse, user: str) -> psycopg.Connection:
    parsed = urlparse(warehouse.url())
    host = parsed.netloc.split("@", 1)[-1]
    return psycopg.connect(urlunparse(parsed._replace(netloc=f"{user}@{host}")), autocommit=True)


def _can(conn: psycopg.Connection, statement: str, *params) -> bool:
    try:
        conn.execute(statement, params or None)
        return True
    except errors.InsufficientPrivilege:
        return False


def test_group_roles_exist_and_cannot_log_in(roles_db):
    warehouse, _ = roles_db
    with warehouse.connect() as conn:
        rows = dict(
            conn.execute(
                "select rolname, rolcanlogin from pg_roles where rolname = any(%s)",
                (list(HUB_ROLES),),
            ).fetchall()
        )
    assert rows == dict.fromkeys(HUB_ROLES, False)


def test_analyst_reads_the_analyst_tier_and_nothing_else(roles_db):
    warehouse, users = roles_db
    with _connect_as(warehouse, users["hub_analyst"]) as conn:
        readable = {t: _can(conn, f"select * from {t} limit 1") for t in ANALYST_READABLE}
        forbidden = {t: _can(conn, f"select * from {t} limit 1") for t in ANALYST_FORBIDDEN}
        calls_vault = _can(
            conn,
            "select * from vault.contact_fields_for_send(array['t1_person'], array['email'],"
            " 'marketing', 'test')",
        )
    assert all(readable.values()), readable
    assert not any(forbidden.values()), forbidden
    assert not calls_vault


def test_sender_reads_vault_rows_only_through_the_audited_function(roles_db):
    warehouse, users = roles_db
    with warehouse.connect() as conn:
        audit_before = conn.execute("select count(*) from audit.events").fetchone()[0]
    with _connect_as(warehouse, users["hub_sender"]) as conn:
        direct = _can(conn, "select * from vault.contact_fields") or _can(
            conn, "select * from vault.contacts"
        )
        rows = conn.execute(
            "select person_token, column_name, key_version from vault.contact_fields_for_send("
            "array['t1_person'], array['email'], 'marketing', 'test send')"
        ).fetchall()
        reads = {
            t: _can(conn, f"select * from {t} limit 1")
            for t in (
                "marts.audience_membership",
                "marts.segment_catalog",
                "landing.person_xref",
                "engagement.suppressions",
                "intermediate.int_consent_events",
                "activation.sync_state",
            )
        }
        blocked = {
            t: _can(conn, f"select * from {t} limit 1")
            for t in (
                "landing.patients",
                "vault.identity_keys",
                "quarantine.records",
                "marts.dim_persons",
            )
        }
        writes_activation = _can(
            conn,
            "insert into activation.sync_state (destination, audience, person_token,"
            " payload_hash) values ('sandbox', 'a', 't1_person', 'h')",
        )
        # The Python audit writer works under this role: INSERT plus the hash to chain on.
        with conn.transaction():
            record_audit(conn, "sync", "sandbox/a", 1, role="hub_sender")
        rewrites_audit = _can(conn, "update audit.events set actor = 'x'")
        deletes_audit = _can(conn, "delete from audit.events")
        reads_audit = _can(conn, "select actor, object from audit.events")
    with warehouse.connect() as conn:
        logged = conn.execute(
            "select actor, role, action, object, row_count from audit.events"
            " where audit_id > (select max(audit_id) - 2 from audit.events) order by audit_id"
        ).fetchall()
        audit_after = conn.execute("select count(*) from audit.events").fetchone()[0]
        intact, bad, _ = verify_chain(conn)
    assert not direct
    assert rows == [("t1_person", "email", 1)]
    assert all(reads.values()), reads
    assert not any(blocked.values()), blocked
    assert writes_activation
    assert not rewrites_audit and not deletes_audit and not reads_audit
    assert audit_after == audit_before + 2
    assert logged[0] == (
        users["hub_sender"],
        "hub_sender",
        "vault_read",
        "vault.contact_fields[email] for test send",
        1,
    )
    assert intact, f"chain broken at {bad}"


def test_pipeline_writes_the_operational_tier_but_not_the_audit_history(roles_db):
    warehouse, users = roles_db
    with _connect_as(warehouse, users["hub_pipeline"]) as conn:
        writes = {
            "landing": _can(
                conn,
                "insert into landing.person_xref (subject_token, person_token)"
                " values ('t1_other', 't1_other_person')",
            ),
            "vault": _can(conn, "select count(*) from vault.contact_fields"),
            "vault (write)": _can(
                conn,
                "insert into vault.contact_fields (subject_token, column_name, key_version,"
                " ciphertext) values ('t1_other', 'email', 1, '\\x00'::bytea)",
            ),
            "engagement": _can(conn, "select count(*) from engagement.events"),
            "activation (read)": _can(conn, "select count(*) from activation.ledger"),
        }
        writes_activation = _can(conn, "delete from activation.sync_state")
        rewrites_audit = _can(conn, "update audit.events set actor = 'x'")
    assert all(writes.values()), writes
    assert not writes_activation
    assert not rewrites_audit


def test_nobody_changes_audit_history_not_even_the_table_owner(roles_db):
    warehouse, users = roles_db
    with _connect_as(warehouse, users["hub_owner"]) as conn:
        assert not _can(conn, "delete from audit.events")
        assert not _can(conn, "update audit.events set actor = 'x'")
        assert _can(conn, "select count(*) from vault.contact_fields")
    # The superuser that owns the table holds every privilege; the trigger still refuses.
    with psycopg.connect(warehouse.url(), autocommit=True) as conn:
        for statement in ("delete from audit.events", "update audit.events set actor = 'x'"):
            with pytest.raises(errors.RaiseException, match="append-only"):
                conn.execute(statement)

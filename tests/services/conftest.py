"""Fixtures for the send and feedback services: an isolated database per module, seeded
with a small population (vault-encrypted contacts, consent events, an audience), and the
SANDBOX engine over HTTPS on loopback.

The dbt-built relations the sync reads (marts.segment_catalog, marts.audience_membership,
intermediate.int_consent_events and its digests) are created here as plain tables with the
contracted columns, so these tests control exactly who is in an audience and who consented.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.email.http_api import HttpEngine
from connectors.warehouse.database import Warehouse
from domain.keys import KeyringFileProvider
from domain.vault_cipher import VaultCipher
from sandbox import SandboxEngine

TOKEN = "sync-test-token"
SECRET = "sync-test-secret"

DBT_STAND_INS = """
create schema if not exists marts;
create schema if not exists intermediate;
create table if not exists marts.segment_catalog (
    audience text primary key, segment_model text, purpose text not null, description text,
    owner text, personalization_fields text[] not null default '{}'
);
create table if not exists marts.audience_membership (
    audience text not null, person_token text not null, purpose text, consent_ref text,
    evaluated_on date, primary key (audience, person_token)
);
create table if not exists intermediate.int_consent_events (
    person_token text not null, purpose text, event_type text not null,
    effective_on date not null, expires_on date, source_ref text
);
create index if not exists int_consent_events_person
    on intermediate.int_consent_events (person_token);
-- dbt's digest table, kept current with the events the tests write as the incremental model
-- keeps it (dbt_project/models/intermediate/consent/int_consent_digests.sql): after each
-- statement on the events, changed digests (with the events beside them) are rewritten and
-- stamped with the change clock's epoch under its shared lock.
create table if not exists intermediate.int_consent_digests (
    person_token text primary key, events_digest text not null, events text,
    change_epoch bigint
);
create index if not exists int_consent_digests_epoch
    on intermediate.int_consent_digests (change_epoch);
create or replace function intermediate.refresh_consent_digests() returns trigger
language plpgsql as $$
begin
    perform pg_advisory_xact_lock_shared(7262007, 0);
    insert into intermediate.int_consent_digests
        (person_token, events_digest, events, change_epoch)
    select coalesce(fresh.person_token, kept.person_token),
        coalesce(fresh.events_digest, '0:'), coalesce(fresh.events, '[]'),
        (select epoch from activation.change_clock)
    from (select person_token, count(*)::text || ':' || sum(hashtextextended(
            row(event_type, effective_on, purpose, expires_on, source_ref)::text, 0))::text
            as events_digest,
            json_agg(json_build_array(event_type, effective_on, purpose, expires_on,
                source_ref) order by effective_on, event_type, purpose, expires_on,
                source_ref)::text as events
        from intermediate.int_consent_events group by person_token) fresh
    full join intermediate.int_consent_digests kept on kept.person_token = fresh.person_token
    where kept.events_digest is distinct from coalesce(fresh.events_digest, '0:')
    on conflict (person_token) do update
    set events_digest = excluded.events_digest, events = excluded.events,
        change_epoch = excluded.change_epoch;
    return null;
end;
$$;
create or replace trigger consent_events_digested
after insert or update or delete or truncate on intermediate.int_consent_events
for each statement execute function intermediate.refresh_consent_digests();
"""


def isolated_database(warehouse: Warehouse, label: str) -> Warehouse:
    """A fresh database on the session's PostgreSQL server, with the hub schema."""
    name = f"{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(warehouse.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base = warehouse.url()
    path_start = base.index("/", base.index("//") + 2)
    query = base.find("?", path_start)
    url = base[:path_start] + "/" + name + (base[query:] if query >= 0 else "")
    isolated = Warehouse(database_url=url)
    isolated.ensure_schema()
    with isolated.connect() as conn:
        conn.execute(DBT_STAND_INS)
    return isolated


@pytest.fixture(scope="module")
def sync_db(warehouse: Warehouse) -> Warehouse:
    return isolated_database(warehouse, "sync_test")


@pytest.fixture
def conn(sync_db: Warehouse) -> Iterator[psycopg.Connection]:
    """A connection to the module's database, emptied of every sync input and record."""
    with sync_db.connect() as conn:
        conn.execute(
            "truncate activation.ledger, activation.sync_runs, activation.sync_state,"
            " activation.sync_watermarks, activation.sync_exclusions, activation.approvals,"
            " activation.recipient_domains,"
            " engagement.suppressions, engagement.events, marts.segment_catalog,"
            " marts.audience_membership, intermediate.int_consent_events,"
            " intermediate.int_consent_digests,"
            " vault.contacts, landing.person_xref, landing.person_changes"
        )
        conn.commit()
        yield conn


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder holding the keyring the seeded vault is encrypted under."""
    state = tmp_path_factory.mktemp("sync-state")
    KeyringFileProvider(state / "keyring.json").vault_cipher()  # creates the file
    return state


@pytest.fixture(scope="module")
def cipher(keyring: Path) -> VaultCipher:
    return KeyringFileProvider(keyring / "keyring.json").vault_cipher()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Callable[..., SandboxEngine]]:
    engines: list[SandboxEngine] = []

    def start(**kwargs: Any) -> SandboxEngine:
        engine = SandboxEngine(
            tmp_path / f"engine{len(engines)}", token=TOKEN, signing_secret=SECRET, **kwargs
        )
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()


def client(engine: SandboxEngine, **kwargs: Any) -> HttpEngine:
    assert engine.base_url is not None
    options: dict[str, Any] = {
        "ca_file": str(engine.ca_cert_path),
        "backoff_base": 0.001,
        "backoff_max": 0.01,
        "sleep": lambda _: None,
        **kwargs,
    }
    return HttpEngine(engine.base_url, TOKEN, SECRET, **options)

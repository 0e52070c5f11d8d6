"""The PostgreSQL connection dies mid-work (pg_terminate_backend from a second connection):
a load leaves nothing half-written and its rerun equals an uninterrupted load; a sync
resumes without losing or duplicating anyone."""

from __future__ import annotations

import csv
import random
import threading
import time
from pathlib import Path

import psycopg
import pytest

from connectors.email.http_api import HttpEngine
from connectors.warehouse.loader import file_fingerprint
from services.ingest import ingest_uris
from services.sync import sync_audience
from tests.reliability.conftest import ENGINE_SECRET, ENGINE_TOKEN
from tests.reliability.corpus.build import CANARIES, CRM_HEADER, crm_row
from tests.reliability.support import (
    BULK_AUDIENCE,
    CountingDelivery,
    Databases,
    add_bulk_audience,
    delivery_report,
    differences,
    snapshot,
)

VICTIM = "reliability-victim"


def _big_crm_file(folder: Path, rows: int = 12_000) -> str:
    path = folder / "contacts-big.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(CRM_HEADER)
        for i in range(rows):
            writer.writerow(
                crm_row(
                    contact_id=f"CBIG{i:07d}",
                    email=f"big{i}@example.org",
                    first_name=f"Given{i}",
                    mrn=f"M{i:08d}",
                    email_opt_in="yes" if i % 3 else "maybe",  # some rows quarantine
                )
            )
    return str(path)


class Victim(threading.Thread):
    """Runs `work(conn)` on its own connection; remembers how it ended."""

    def __init__(self, url: str, work) -> None:
        super().__init__(daemon=True)
        self.url, self.work = url, work
        self.error: BaseException | None = None
        self.finished = False

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, application_name=VICTIM) as conn:
                self.work(conn)
            self.finished = True
        except BaseException as error:
            self.error = error


def _terminate_when(url: str, victim: Victim, ready_sql: str, delay: float) -> bool:
    """Once `ready_sql` returns true, wait `delay` s and kill the victim's backend."""
    with psycopg.connect(url, autocommit=True) as admin:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and victim.is_alive():
            if admin.execute(ready_sql).fetchone()[0]:
                break
            time.sleep(0.01)
        time.sleep(delay)
        killed = admin.execute(
            "select coalesce(bool_or(pg_terminate_backend(pid)), false) from pg_stat_activity"
            " where application_name = %s and datname = current_database()",
            (VICTIM,),
        ).fetchone()[0]
    victim.join(120)
    return killed and not victim.finished


def test_connection_killed_mid_load_leaves_nothing_and_rerun_equals_clean_load(
    databases: Databases, schema_template, protector, cipher, tmp_path, figures
):
    big = _big_crm_file(tmp_path)
    _, sha = file_fingerprint(big)
    reference = databases.create("rel_load_ref", template=schema_template)
    with reference.connect() as conn:
        ingest_uris(conn, [big], protector)
        expected = snapshot(conn, cipher)

    faulted = databases.create("rel_load_fault", template=schema_template)
    victim = Victim(faulted.url(), lambda conn: ingest_uris(conn, [big], protector))
    victim.start()
    in_load = (
        "select exists (select 1 from pg_stat_activity where application_name = 'reliability-"
        "victim' and datname = current_database() and xact_start is not null)"
    )
    assert _terminate_when(faulted.url(), victim, in_load, random.uniform(0.05, 0.4))
    figures.add("pg_connections_terminated")
    assert isinstance(victim.error, psycopg.OperationalError), victim.error
    assert not [c for c in CANARIES if c in str(victim.error)]
    with faulted.connect() as conn:  # nothing of the file is there, not even its manifest row
        assert not conn.execute(
            "select count(*) from landing.source_files where sha256 = %s", (sha,)
        ).fetchone()[0]
        for table in ("landing.contacts", "vault.contact_fields", "quarantine.records"):
            assert conn.execute(f"select count(*) from {table}").fetchone()[0] == 0, table
        [result] = ingest_uris(conn, [big], protector)
        assert result.reconciled and not result.skipped
        actual = snapshot(conn, cipher)
    assert not differences(expected, actual)
    figures.add("records_lost", sum((expected[t] - actual[t]).total() for t in expected))


def test_connection_killed_mid_sync_then_rerun_delivers_each_member_once(
    databases: Databases, built_template, cipher, sandbox, figures
):
    warehouse = databases.create("rel_sync_fault", template=built_template)
    with warehouse.connect() as conn:
        # Large enough, and the kill soon enough after the 50th acknowledgement, that the
        # sync is still half-way when its connection dies, however fast the machine.
        people = add_bulk_audience(conn, cipher, 1500)
    delivery = CountingDelivery()
    engine = sandbox(delivery=delivery)

    def client() -> HttpEngine:
        return HttpEngine(engine.base_url, ENGINE_TOKEN, ENGINE_SECRET, str(engine.ca_cert_path))

    def sync(conn: psycopg.Connection) -> None:
        sync_audience(
            conn, client(), cipher, destination="sandbox", audience=BULK_AUDIENCE, batch_size=10
        )

    victim = Victim(warehouse.url(), sync)
    victim.start()
    mid_push = "select count(*) >= 50 from activation.ledger where status = 'acked'"
    assert _terminate_when(warehouse.url(), victim, mid_push, random.uniform(0, 0.05))
    figures.add("pg_connections_terminated")
    assert isinstance(victim.error, psycopg.Error), victim.error
    assert "@" not in str(victim.error)
    with warehouse.connect() as conn:
        acked = conn.execute(
            "select count(*) from activation.ledger where status = 'acked'"
        ).fetchone()[0]
        assert 0 < acked < len(people)  # really interrupted half-way
        sync(conn)
        report = delivery_report(
            conn,
            client().list_member_ids(BULK_AUDIENCE),
            delivery.of(BULK_AUDIENCE),
            BULK_AUDIENCE,
            set(people),
        )
    figures.add("members_lost", report.lost)
    figures.add("members_duplicated", report.duplicated)
    assert report.lost == report.duplicated == report.extra_at_engine == 0, report
    assert report.pending_ledger_rows == 0 and report.people_not_acked_once == 0, report


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # A victim thread's exception is expected; keep pytest's thread-exception hook quiet.
    monkeypatch.setattr(threading, "excepthook", lambda args: None)

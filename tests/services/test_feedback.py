"""Feedback by cursor polling from the SANDBOX engine into engagement.*: exactly once,
suppressions at once, domains only (rare ones as 'other'), and the loop closed: an
unsubscribe read back removes the person on the next sync."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from connectors.email.base import EngineEvent
from services.approvals import approve
from services.feedback import read_feedback, store_events
from services.sync import sync_audience
from tests.services.conftest import client
from tests.services.population import add_people, define_audience, person, set_contact

TODAY = dt.date(2026, 3, 2)
SENT_AT = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)


@pytest.fixture
def conn(sync_db) -> Iterator[psycopg.Connection]:
    with sync_db.connect() as conn:
        conn.execute(
            "truncate activation.ledger, activation.sync_runs, activation.sync_state,"
            " activation.approvals, activation.recipient_domains, engagement.suppressions,"
            " engagement.events, engagement.cursors, marts.segment_catalog,"
            " marts.audience_membership, intermediate.int_consent_events,"
            " vault.contact_fields, landing.person_xref"
        )
        conn.commit()
        yield conn


def test_polling_stores_every_event_once_with_suppressions_and_domains(conn, cipher, sandbox):
    add_people(conn, cipher, range(200))
    set_contact(conn, cipher, 5, "email", "someone@rare-vanity.example")
    conn.commit()
    define_audience(conn, "flu", "treatment", range(200))
    engine = sandbox(clock=lambda: SENT_AT)
    sync_audience(conn, client(engine), cipher, destination="sandbox", audience="flu", day=TODAY)

    first = read_feedback(conn, client(engine), "sandbox", page_size=37)
    stream = client(engine).events(None, 1000).events
    assert first.read == first.new == len(stream) > 200
    assert first.by_type == Counter(e.type for e in stream)
    again = read_feedback(conn, client(engine), "sandbox")
    assert again.new == 0

    stored = conn.execute("select count(*) from engagement.events").fetchone()[0]
    assert stored == len(stream)
    expected = {
        e.event_id
        for e in stream
        if e.type in ("unsubscribe", "complaint") or e.bounce_type == "hard"
    }
    suppressed = {r[0] for r in conn.execute("select event_id from engagement.suppressions")}
    assert suppressed == expected and first.suppressions == len(expected)
    domains = dict(
        conn.execute(
            "select recipient_domain, count(*) from engagement.events group by 1"
        ).fetchall()
    )
    assert set(domains) <= {"example.org", "other"} and "other" in domains
    machine = conn.execute(
        "select count(*) from engagement.events where machine_open and event_type = 'open'"
    ).fetchone()[0]
    assert machine == sum(e.machine_open for e in stream)


def test_an_unsubscribe_read_back_removes_the_person_on_the_next_sync(conn, cipher, sandbox):
    add_people(conn, cipher, range(20))
    define_audience(conn, "reengage", "marketing", range(20))
    approve(conn, "reengage", "reviewer", "ok to send")
    engine = sandbox()
    sync = {"destination": "sandbox", "audience": "reengage", "day": TODAY}
    sync_audience(conn, client(engine), cipher, **sync)

    unsubscribe = EngineEvent(
        "hook-unsub-4", "unsubscribe", person(4), "reengage", SENT_AT + dt.timedelta(hours=1)
    )
    result = store_events(conn, "sandbox", [unsubscribe], source="webhook/hub")
    assert result.suppressions == 1
    after = sync_audience(conn, client(engine), cipher, **sync)
    assert (after.removed, after.excluded_by_reason) == (1, {"unsubscribed": 1})
    assert person(4) not in client(engine).list_member_ids("reengage")

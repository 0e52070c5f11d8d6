"""Audiences synced side by side (services.sync.sync_audiences with an engine that may be
shared between threads): each on a connection of its own, ending exactly where one by one
would, results in the order given, and a failure surfacing at its audience."""

from __future__ import annotations

import time

import pytest

from services.sync import sync_audiences
from tests.services.conftest import client
from tests.services.population import add_people, define_audience, person
from tests.services.test_sync import TODAY

# Overlapping audiences: the same people's recipient domains are written by runs side by side.
AUDIENCES = {"flu": range(0, 40), "checkup": range(20, 60), "reminder": range(10, 50)}


def state(conn, destination: str) -> list[tuple]:
    return conn.execute(
        "select audience, person_token, payload_hash from activation.sync_state"
        " where destination = %s order by 1, 2",
        (destination,),
    ).fetchall()


def test_audiences_synced_side_by_side_end_where_one_by_one_would(conn, cipher, sandbox):
    add_people(conn, cipher, range(60))
    for audience, members in AUDIENCES.items():
        define_audience(conn, audience, "treatment", members)
    ends = {}
    for lanes in (1, 3):
        engine, destination = sandbox(), f"lanes-{lanes}"
        results = list(
            sync_audiences(
                conn,
                client(engine),
                cipher,
                list(AUDIENCES),
                lanes,
                destination=destination,
                day=TODAY,
            )
        )
        assert [(r.audience, r.added, r.status) for r in results] == [
            (audience, len(members), "succeeded") for audience, members in AUDIENCES.items()
        ]
        held = {a: sorted(client(engine).list_member_ids(a)) for a in AUDIENCES}
        assert held == {a: sorted(person(i) for i in m) for a, m in AUDIENCES.items()}
        ends[lanes] = state(conn, destination)
        pending = "select count(*) from activation.ledger where status = 'pending'"
        assert conn.execute(pending).fetchone() == (0,)
    assert ends[1] == ends[3] and len(ends[3]) == 120
    domains = "select count(distinct person_token) from activation.recipient_domains"
    assert conn.execute(domains).fetchone() == (60,)


def test_a_failed_run_surfaces_at_its_audience_and_leaves_no_lane_running(conn, cipher, sandbox):
    add_people(conn, cipher, range(10))
    define_audience(conn, "flu", "treatment", range(10))
    runs = sync_audiences(
        conn, client(sandbox()), cipher, ["flu", "unknown"], 2, destination="sandbox", day=TODAY
    )
    assert next(runs).added == 10
    with pytest.raises(LookupError, match="unknown audience"):
        next(runs)
    # Every lane has stopped and closed its connections: only the caller's is left (a
    # backend leaves pg_stat_activity a moment after its client closed it, and a
    # transaction sees one snapshot of that view, hence a new one per look).
    others = (
        "select count(*) from pg_stat_activity"
        " where datname = current_database() and pid <> pg_backend_pid()"
    )
    for _ in range(100):
        (count,) = conn.execute(others).fetchone()
        conn.rollback()
        if count == 0:
            break
        time.sleep(0.05)
    assert count == 0

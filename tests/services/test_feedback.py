"""Feedback by cursor polling from the SANDBOX engine into engagement.*: exactly once,
suppressions at once, domains only (rare ones as 'other'), and the loop closed: an
unsubscribe read back removes the person on the next sync."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import orjson
import psycopg
import pytest

from connectors.email.base import EngineEvent
from connectors.email.envelope import EnvelopeWriter
from connectors.email.file_exchange import FileExchangeEngine
from services.approvals import approve
from services.feedback import EventWriter, FeedbackResult, read_feedback, store_events
from services.sync import sync_audience
from tests.services.conftest import client
from tests.services.population import add_people, define_audience, person, set_contact

TODAY = dt.date(2026, 3, 2)
AT = "2026-03-02T09:00:00+00:00"
SENT_AT = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)


@pytest.fixture
def conn(sync_db) -> Iterator[psycopg.Connection]:
    with sync_db.connect() as conn:
        conn.execute(
            "truncate activation.ledger, activation.sync_runs, activation.sync_state,"
            " activation.approvals, activation.recipient_domains, engagement.suppressions,"
            " engagement.events, engagement.cursors, marts.segment_catalog,"
            " marts.audience_membership, intermediate.int_consent_events,"
            " vault.contacts, landing.person_xref"
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
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # all committed
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


def event(event_id: str, kind: str, who: int, bounce: str | None = None) -> EngineEvent:
    return EngineEvent(event_id, kind, person(who), "flu", SENT_AT, bounce_type=bounce)


def test_stored_events_count_once_by_id_whichever_way_they_are_written(conn):
    batch = [
        event("e1", "unsubscribe", 1),
        event("e1", "unsubscribe", 1),  # repeated within the batch
        event("e2", "open", 2),
        event("e3", "bounce", 3, "hard"),
        event("e4", "bounce", 4, "soft"),
        EngineEvent("e5", "open", "", "flu", SENT_AT),  # no person token: unmapped
    ]
    first = store_events(conn, "sandbox", batch)
    assert (first.read, first.new, first.unmapped, first.suppressions) == (6, 4, 1, 2)
    assert first.by_type == Counter({"unsubscribe": 1, "open": 1, "bounce": 2})
    again = store_events(conn, "sandbox", [*batch, event("e6", "complaint", 6)])
    assert (again.new, again.suppressions) == (1, 1)
    # An id with a line break takes the general (ON CONFLICT) way: same results.
    odd = [event("e7\nx", "complaint", 7), event("e2", "open", 2)]
    assert (store_events(conn, "sandbox", odd).new, store_events(conn, "sandbox", odd).new) == (
        1,
        0,
    )
    kinds = dict(conn.execute("select event_id, event_type from engagement.suppressions"))
    assert kinds == {"e1": "unsubscribe", "e3": "hard_bounce", "e6": "complaint",
                     "e7\nx": "complaint"}  # fmt: skip
    assert conn.execute("select count(*) from engagement.events").fetchone()[0] == 6


def test_after_a_collision_the_writer_looks_ids_up_first(conn, monkeypatch):
    """A writer trusts its pages' ids to be new until a COPY collides; from then on it looks
    the ids of each page up and COPYs only the new ones, without the idempotent way."""
    with conn.transaction():
        writer = EventWriter(conn, "sandbox", 10)
    general = []
    idempotent = EventWriter._write_idempotent
    monkeypatch.setattr(EventWriter, "_write_idempotent",
                        lambda self, *a: general.append(1) or idempotent(self, *a))  # fmt: skip
    result = FeedbackResult("sandbox")
    pages = [["a", "b"], ["b", "c"], ["c", "d", "e\nf"], ["d", "g"]]
    for ids in pages:
        rows = [(i, None, person(1), "unsubscribe", AT, False, None) for i in ids]
        with conn.transaction():
            writer.write(rows, result)
    # page 2 collides (general way); page 3 holds a line break, which the lookup cannot
    # send (general way); page 4 is looked up and COPYed.
    assert len(general) == 2
    assert (result.new, result.suppressions) == (6, 6)
    stored = conn.execute("select count(*) from engagement.suppressions").fetchone()[0]
    assert stored == conn.execute("select count(*) from engagement.events").fetchone()[0] == 6


def test_a_concurrent_writer_of_the_same_event_is_waited_for_and_skipped(conn, sync_db):
    """The webhook applier has stored an id of the page, not yet committed: the page's COPY
    waits for it and fails, and the page goes the idempotent way, after waiting for that
    writer, and counts the id once."""
    with sync_db.connect() as other, sync_db.connect() as watcher:
        other.execute(
            "insert into engagement.events (event_id, destination, person_token, event_type,"
            " occurred_at) values ('race-1', 'sandbox', %s, 'unsubscribe', now())",
            (person(1),),
        )  # not committed yet: the COPY of the same id waits for it
        batch = [event("race-1", "unsubscribe", 1), event("race-2", "open", 2)]
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(store_events, conn, "sandbox", batch)
            pid = conn.info.backend_pid
            for _ in range(600):  # until the writer waits on the other's row lock
                wait = watcher.execute(
                    "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
                ).fetchone()
                if wait and wait[0] == "Lock":
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the writer never waited for the concurrent insert")
            other.commit()
            result = pending.result(timeout=120)
    assert (result.new, result.by_type) == (1, Counter({"open": 1}))
    assert result.suppressions == 0  # race-1's suppression is the other writer's to record
    assert conn.execute("select count(*) from engagement.events").fetchone()[0] == 2


def test_a_suppression_outliving_its_purged_event_sends_the_page_the_idempotent_way(conn):
    """Suppressions are COPYed without a conflict check: one left behind by an event that
    retention purged makes the COPY fail, and the page is stored the idempotent way."""
    conn.execute(
        "insert into engagement.suppressions (event_id, destination, person_token, event_type,"
        " effective_at) values ('old-1', 'sandbox', %s, 'unsubscribe', now())",
        (person(1),),
    )
    conn.commit()
    result = store_events(conn, "sandbox", [event("old-1", "unsubscribe", 1),
                                            event("new-1", "complaint", 2)])  # fmt: skip
    assert (result.new, result.suppressions) == (2, 1)
    kinds = dict(conn.execute("select event_id, event_type from engagement.suppressions"))
    assert kinds == {"old-1": "unsubscribe", "new-1": "complaint"}


def test_values_copy_needs_to_quote_are_stored_as_they_are(conn):
    odd = ["tab\there", 'quote"d', "back\\slash", "comma,semi;", "\\N", ""]
    batch = [
        EngineEvent(f"id-{value}", "open", person(i), value or None, SENT_AT)
        for i, value in enumerate(odd)
    ]
    assert store_events(conn, "sandbox", batch).new == len(odd)
    stored = dict(conn.execute("select event_id, audience from engagement.events"))
    assert stored == {f"id-{value}": value or None for value in odd}
    # Tokens with a line break or a quote are looked up for their domains all the same:
    # through the key (11 people against a table of 202 rows), or all read at once (27).
    odd_tokens = ["odd\ntoken", 'quo"ted, token']
    conn.execute(
        "insert into activation.recipient_domains select unnest(%s::text[]), 'x.example'"
        " union all select 'filler-' || i, 'y.example' from generate_series(1, 200) i",
        (odd_tokens,),
    )
    for many in (False, True):
        others = [person(i) for i in range(25 if many else 9)]
        events = [EngineEvent(f"id-{many}-{who}", "open", who, None, SENT_AT)
                  for who in [*odd_tokens, *others]]  # fmt: skip
        store_events(conn, "sandbox", events, min_domain_persons=1)
    domain = "select distinct recipient_domain from engagement.events where person_token = %s"
    for token in odd_tokens:
        assert conn.execute(domain, (token,)).fetchall() == [("x.example",)]


def write_pages(conn, pages: int, min_domain_persons: int, also: tuple[str, ...] = ()):
    """People p0.. in pages of 20, each page sharing 10 with the page before (plus `also`)."""
    with conn.transaction():
        writer = EventWriter(conn, "sandbox", min_domain_persons)
    result = FeedbackResult("sandbox")
    for page in range(pages):
        people = [f"p{page * 10 + i}" for i in range(20)] + list(also)
        rows = [(f"e{page}-{who}", None, who, "open", AT, False, None) for who in people]
        with conn.transaction():
            writer.write(rows, result)
    return writer, result


@pytest.mark.parametrize("analysed", [False, True])
def test_domains_are_looked_up_once_per_person_across_pages(conn, analysed):
    """All at once when a page brings many people for the size of the table (here the first
    page's 21 people against the table's 40 rows, as estimated once analysed, or counted
    before), and then never again: people not read then have no domain, and the writer
    remembers no more of them."""
    conn.execute(
        "insert into activation.recipient_domains (person_token, domain)"
        " select 'p' || i, case when i % 2 = 0 then 'example.org' else 'rare' || i || '.example'"
        " end from generate_series(0, 39) as i"
    )
    conn.commit()
    if analysed:
        conn.execute("analyze activation.recipient_domains")
        conn.commit()
    writer, result = write_pages(conn, 4, min_domain_persons=10, also=("nobody",))
    assert result.new == 84
    assert writer._all_known
    known = writer._known
    assert known.height == known["person_token"].n_unique() == 41  # the table and "nobody"
    recorded = dict(conn.execute("select person_token, recipient_domain from engagement.events"))
    assert recorded["nobody"] is None
    assert {recorded[f"p{i}"] for i in range(40, 50)} == {None}
    assert {recorded[f"p{i}"] for i in range(0, 40, 2)} == {"example.org"}
    assert {recorded[f"p{i}"] for i in range(1, 40, 2)} == {"other"}


def test_the_probes_of_a_readback_add_up_to_one_read_of_every_domain(conn):
    """Pages of few people each are looked up through the key until their probes would add
    up to reading the whole table (ten rows a probe): the next page reads it all at once."""
    conn.execute(
        "insert into activation.recipient_domains (person_token, domain)"
        " select 'p' || i, 'example.org' from generate_series(0, 299) as i"
    )
    conn.execute("analyze activation.recipient_domains")
    conn.commit()
    writer, _ = write_pages(conn, 1, min_domain_persons=1)  # 20 people: 200 < 300 rows
    assert not writer._all_known and writer._probed == 20
    # Another readback from the start (its first page stored already): 10 more people on
    # its second page make 300.
    writer, result = write_pages(conn, 3, min_domain_persons=1)
    assert writer._all_known and result.new == 40
    domains = conn.execute("select distinct recipient_domain from engagement.events").fetchall()
    assert domains == [("example.org",)]


def test_the_domain_memory_starts_again_when_full_without_losing_a_page(conn, monkeypatch):
    monkeypatch.setattr("services.feedback.MAX_KNOWN_DOMAINS", 25)
    conn.execute(
        "insert into activation.recipient_domains (person_token, domain)"
        " select 'p' || i, 'example.org' from generate_series(0, 39) as i"
    )
    conn.commit()
    writer, result = write_pages(conn, 3, min_domain_persons=1)
    assert not writer._all_known  # the table's 40 rows would not fit: looked up by the key
    domains = conn.execute("select distinct recipient_domain from engagement.events").fetchall()
    assert result.new == 60 and domains == [("example.org",)]


def test_a_page_that_fails_to_store_stops_the_readback_after_the_pages_before(
    conn, tmp_path, monkeypatch
):
    """Pages are stored in a thread while the next is prepared: a page that fails stops the
    readback, the cursor stays after the last page stored, and the next readback goes on."""
    exchange = _extract(tmp_path, 50)
    monkeypatch.setattr(FileExchangeEngine, "events_page_size", 7)
    store, calls = EventWriter.store, []

    def failing_third(self, page, result):
        calls.append(1)
        if len(calls) == 3:
            raise psycopg.errors.DiskFull("no space left")
        store(self, page, result)

    monkeypatch.setattr(EventWriter, "store", failing_third)
    with pytest.raises(psycopg.errors.DiskFull):
        read_feedback(conn, exchange, "files")
    conn.rollback()
    (cursor,) = conn.execute("select cursor from engagement.cursors").fetchone()
    assert cursor.endswith("|14")
    assert conn.execute("select count(*) from engagement.events").fetchone()[0] == 14
    monkeypatch.setattr(EventWriter, "store", store)
    rest = read_feedback(conn, exchange, "files")
    assert (rest.read, rest.new) == (36, 36)


def _extract(tmp_path, events: int) -> FileExchangeEngine:
    """A file-exchange engine whose inbox holds one sealed tracking extract of `events`
    events (a third of them unsubscribes)."""
    key = bytes(range(32))
    inbox = tmp_path / "in"
    inbox.mkdir()
    rows = [
        {"event_id": f"x{i}", "event_type": ("open", "click", "unsubscribe")[i % 3],
         "external_id": person(i % 11), "audience_id": "flu", "occurred_at": AT}
        for i in range(events)
    ]  # fmt: skip
    with open(inbox / "tracking.ndjson.ahx", "wb") as sink, EnvelopeWriter(sink, key, "k") as out:
        out.write(b"\n".join(orjson.dumps(row) for row in rows) + b"\n")
    return FileExchangeEngine(str(tmp_path / "out"), str(inbox), {"k": key}, "k")


def test_a_tracking_extract_is_read_once_in_pages_of_the_engine_size(conn, tmp_path, monkeypatch):
    exchange = _extract(tmp_path, 50)
    monkeypatch.setattr(FileExchangeEngine, "events_page_size", 7)
    first = read_feedback(conn, exchange, "files")
    assert (first.read, first.new, first.suppressions) == (50, 50, 16)
    again = read_feedback(conn, exchange, "files")
    assert (again.read, again.new) == (0, 0)
    stored = conn.execute("select count(*) from engagement.events where destination = 'files'")
    assert stored.fetchone()[0] == 50

"""Read engagement events back from an engine into engagement.* (exactly once, by cursor).

Each page of events and the cursor after it commit in one transaction, and events insert
idempotently by event id, so a crash or a re-delivered page never double-counts. The same
`store_events` writes events from webhooks and tracking extracts.

Unsubscribes, complaints and hard bounces also land in engagement.suppressions, which the
send-time consent gate reads directly: they take effect before the next sync, and the next
sync of every affected audience removes the person (a removal is queued by the diff).

engagement.events.recipient_domain gets the recipient's email domain from
activation.recipient_domains (written at sync time; never the address). Domains shared by
fewer than `min_domain_persons` people are stored as 'other', so a vanity domain cannot
single anyone out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg

from connectors.email.base import EmailEngine, EngineEvent
from connectors.warehouse.audit import record_audit

PAGE_SIZE = 1000
COMMIT_EVERY = 10_000  # events per transaction when polling
MIN_DOMAIN_PERSONS = 10
SUPPRESSING = {"unsubscribe": "unsubscribe", "complaint": "complaint"}


@dataclass
class FeedbackResult:
    destination: str
    read: int = 0
    new: int = 0
    by_type: Counter = field(default_factory=Counter)
    suppressions: int = 0
    unmapped: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "destination": self.destination,
            "read": self.read,
            "new": self.new,
            "by_type": dict(self.by_type),
            "suppressions": self.suppressions,
            "unmapped": self.unmapped,
        }


def suppression_type(event_type: str, bounce_type: str | None) -> str | None:
    if event_type == "bounce":
        return "hard_bounce" if bounce_type == "hard" else None
    return SUPPRESSING.get(event_type)


def read_feedback(
    conn: psycopg.Connection,
    engine: EmailEngine,
    destination: str,
    page_size: int = PAGE_SIZE,
    min_domain_persons: int = MIN_DOMAIN_PERSONS,
    commit_every: int = COMMIT_EVERY,
) -> FeedbackResult:
    """Poll the engine from the stored cursor until it has nothing new.

    Pages are written in transactions of about `commit_every` events, each together with
    the cursor after its last page: a crash re-reads at most that many events, which the
    event-id key absorbs. One page is fetched ahead while the previous ones are written, so
    the engine's and the database's time overlap; engine calls stay one at a time.
    """
    result = FeedbackResult(destination)
    # Its own transaction: every page batch below must commit for real, not as a savepoint
    # of a transaction left open by these reads.
    with conn.transaction():
        row = conn.execute(
            "select cursor from engagement.cursors where destination = %s", (destination,)
        ).fetchone()
        writer = EventWriter(conn, destination, min_domain_persons)
    cursor = row[0] if row else None
    stored = cursor
    pending: list[EngineEvent] = []

    def flush() -> None:
        nonlocal stored
        with conn.transaction():
            writer.write(pending, result)
            conn.execute(
                "insert into engagement.cursors (destination, cursor) values (%s, %s)"
                " on conflict (destination) do update set cursor = excluded.cursor,"
                " updated_at = now()",
                (destination, cursor),
            )
        pending.clear()
        stored = cursor

    with ThreadPoolExecutor(1, thread_name_prefix="feedback-fetch") as fetcher:
        ahead = fetcher.submit(engine.events, cursor, page_size)
        while True:
            page = ahead.result()
            if page.events:
                ahead = fetcher.submit(engine.events, page.next_cursor, page_size)
            pending.extend(page.events)
            cursor = page.next_cursor
            if len(pending) >= commit_every or (not page.events and cursor != stored):
                flush()
            if not page.events:
                break
    with conn.transaction():
        record_audit(conn, "read_feedback", f"{destination}/events", result.new)
    return result


def store_events(
    conn: psycopg.Connection,
    destination: str,
    events: Iterable[EngineEvent],
    *,
    source: str = "events",
    unmapped: int = 0,
    min_domain_persons: int = MIN_DOMAIN_PERSONS,
) -> FeedbackResult:
    """Write a batch of events (webhook delivery, extract file) in one transaction, committed
    on return unless the caller holds a transaction open (then it is a savepoint of it)."""
    result = FeedbackResult(destination, unmapped=unmapped)
    with conn.transaction():
        writer = EventWriter(conn, destination, min_domain_persons)
        writer.write(events, result)
        record_audit(conn, "store_events", f"{destination}/{source}", result.new)
    return result


class EventWriter:
    """Bulk, idempotent writes of events and the suppressions they imply (caller's
    transaction): COPY into a temp table, then one INSERT ... ON CONFLICT DO NOTHING."""

    def __init__(self, conn: psycopg.Connection, destination: str, min_domain_persons: int) -> None:
        self.conn, self.destination = conn, destination
        # Emptied by every commit (each page is one transaction): no TRUNCATE per page.
        conn.execute(
            "create temp table if not exists feedback_page (event_id text, audience text,"
            " person_token text, event_type text, occurred_at timestamptz,"
            " machine_open boolean, bounce_type text) on commit delete rows"
        )
        # Domains common enough to report as themselves; computed once per writer.
        self.domains = [
            domain
            for (domain,) in conn.execute(
                "select domain from activation.recipient_domains group by domain"
                " having count(*) >= %s",
                (min_domain_persons,),
            )
        ]

    def write(self, events: Iterable[EngineEvent], result: FeedbackResult) -> None:
        conn = self.conn
        conn.execute("delete from feedback_page")  # already empty unless a page was retried
        with conn.cursor() as cur, cur.copy("copy feedback_page from stdin") as copy:
            for event in events:
                result.read += 1
                person = event.external_id or None
                if person is None:
                    result.unmapped += 1
                    continue
                copy.write_row(
                    (
                        event.event_id,
                        event.audience_id or None,
                        person,
                        event.type,
                        event.occurred_at,
                        bool(event.machine_open),
                        event.bounce_type,
                    )
                )
        rows = conn.execute(
            "with new as ("
            " insert into engagement.events (event_id, destination, audience, person_token,"
            "  event_type, occurred_at, machine_open, bounce_type, recipient_domain)"
            " select p.event_id, %(destination)s, p.audience, p.person_token, p.event_type,"
            "  p.occurred_at, p.machine_open, p.bounce_type,"
            "  case when p.domain is null then null"
            "   when p.domain = any(%(domains)s) then p.domain else 'other' end"
            # An index lookup per event (a scalar subquery is never turned into a hash join
            # over the whole domain table): a page is small, the domain table is not.
            " from (select f.*, (select r.domain from activation.recipient_domains r"
            "  where r.person_token = f.person_token) as domain from feedback_page f"
            "  offset 0) p"  # offset 0: look each domain up once, not once per use
            " on conflict (event_id) do nothing"
            " returning event_id, person_token, event_type, bounce_type, occurred_at),"
            " suppressed as ("
            " insert into engagement.suppressions (event_id, destination, person_token,"
            "  event_type, effective_at)"
            " select event_id, %(destination)s, person_token,"
            "  case when event_type = 'bounce' then 'hard_bounce' else event_type end,"
            "  occurred_at from new"
            " where event_type in ('unsubscribe', 'complaint')"
            "  or (event_type = 'bounce' and bounce_type = 'hard')"
            " on conflict (event_id) do nothing returning 1)"
            " select event_type, count(*), (select count(*) from suppressed) from new"
            " group by event_type",
            {"destination": self.destination, "domains": self.domains},
        ).fetchall()
        for event_type, count, _ in rows:
            result.new += count
            result.by_type[event_type] += count
        result.suppressions += rows[0][2] if rows else 0  # the same scalar on every row

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
from connectors.email.events import EventRow, RowPage, event_row
from connectors.warehouse.audit import record_audit

# Events per engine request and per transaction when polling: large pages keep the per-request
# and per-commit costs (HTTPS round trip, JSON envelope, fsync) small against the events.
# Engines that cap pages lower answer smaller pages (HttpEngine falls back to 1,000 for an
# engine that refuses large ones); `page_size=` lowers it per call.
PAGE_SIZE = 20_000
# The first request asks for fewer, and each next one for 4 times more up to PAGE_SIZE: the
# first page is written while the second is fetched, so the pipeline fills at once instead
# of waiting for a full page (most polls find far fewer than PAGE_SIZE events).
FIRST_PAGE = 2_000
COMMIT_EVERY = 1  # events per transaction at least: by default each page commits alone
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

    Pages are written in transactions of at least `commit_every` events (by default one
    page each; pages grow from FIRST_PAGE to `page_size` events), each together with the
    cursor after its last page: a crash re-reads at most that many events, which the
    event-id key absorbs. The next page is fetched (and mapped to rows) in a second thread
    while the previous one is written, so the engine's, the mapping's and the database's
    time overlap; engine calls stay one at a time.
    """
    result = FeedbackResult(destination)
    # Its own transaction: every page batch below must commit for real, not as a savepoint
    # of a transaction left open by these reads.
    with conn.transaction():
        row = conn.execute(
            "select cursor from engagement.cursors where destination = %s", (destination,)
        ).fetchone()
    cursor = row[0] if row else None
    stored = cursor
    pending: list[EventRow] = []
    size = min(page_size, FIRST_PAGE)

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
        ahead = fetcher.submit(_row_page, engine, cursor, size)
        with conn.transaction():  # while the first page is on its way
            writer = EventWriter(conn, destination, min_domain_persons)
        while True:
            page = ahead.result()
            if page.read:
                size = min(page_size, size * 4)
                ahead = fetcher.submit(_row_page, engine, page.next_cursor, size)
            result.read += page.read
            result.unmapped += page.unmapped
            pending.extend(page.rows)
            cursor = page.next_cursor
            if len(pending) >= commit_every or (not page.read and (pending or cursor != stored)):
                flush()
            if not page.read:
                break
    with conn.transaction():
        record_audit(conn, "read_feedback", f"{destination}/events", result.new)
    return result


def _row_page(engine: EmailEngine, cursor: str | None, limit: int) -> RowPage:
    """A page as rows: the engine's bulk `event_rows` when it has one (HttpEngine), else its
    EngineEvents turned into rows, those without an external id counted as unmapped."""
    event_rows = getattr(engine, "event_rows", None)
    if event_rows is not None:
        return event_rows(cursor, limit)
    page = engine.events(cursor, limit)
    rows = [event_row(e) for e in page.events if e.external_id]
    return RowPage(rows, page.next_cursor, len(page.events), len(page.events) - len(rows))


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
    rows = []
    for event in events:
        result.read += 1
        if event.external_id:
            rows.append(event_row(event))
        else:
            result.unmapped += 1  # never keyed on anything but the person token
    with conn.transaction():
        writer = EventWriter(conn, destination, min_domain_persons)
        writer.write(rows, result)
        record_audit(conn, "store_events", f"{destination}/{source}", result.new)
    return result


class EventWriter:
    """Bulk, idempotent writes of events and the suppressions they imply (caller's
    transaction), a handful of statements per page whatever its size.

    Fast path: look up which ids are already stored and the page's recipient domains (two
    index-probe queries), then COPY the new events straight into engagement.events and add
    their suppressions in one INSERT. COPY costs PostgreSQL about half the CPU per event of
    INSERT ... SELECT ... ON CONFLICT, which was the bottleneck of readback. If a concurrent
    writer (the webhook applier) stores one of the ids in between, the COPY fails as a whole
    (a savepoint) and the page goes the idempotent way: COPY into a temp table, then one
    INSERT ... ON CONFLICT DO NOTHING, which waits for that writer and skips its ids.
    """

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
        self._common = frozenset(self.domains)

    def write(self, rows: list[EventRow], result: FeedbackResult) -> None:
        """Write mapped rows (see connectors.email.events.EventRow); counts new events and
        suppressions into `result` (the caller counts what it read and left unmapped)."""
        if not rows:
            return
        conn = self.conn
        fresh: dict[str, EventRow] = {}
        for row in rows:
            fresh.setdefault(row[0], row)  # an id repeated within the page counts once
        ids, persons = _lines(fresh), _lines({row[2] for row in fresh.values()})
        if ids is None or persons is None:  # a line break inside an id: the general way
            self._write_idempotent(rows, result)
            return
        for (event_id,) in conn.execute(
            "select event_id from engagement.events"
            " where event_id = any(string_to_array(%s, E'\\n'))",
            (ids,),
        ):
            del fresh[event_id]
        if not fresh:
            return
        domain = self._domains(persons).get
        destination = self.destination
        try:
            with conn.transaction(), conn.cursor() as cur:  # a savepoint
                with cur.copy(
                    "copy engagement.events (event_id, audience, person_token, event_type,"
                    " occurred_at, machine_open, bounce_type, destination, recipient_domain)"
                    " from stdin"
                ) as copy:
                    write_row = copy.write_row
                    for row in fresh.values():
                        write_row((*row, destination, domain(row[2])))
                suppressed = _suppress(cur, destination, fresh.values())
        except psycopg.errors.UniqueViolation:
            self._write_idempotent(rows, result)
            return
        types = Counter(row[3] for row in fresh.values())
        result.new += len(fresh)
        result.by_type.update(types)
        result.suppressions += suppressed

    def _domains(self, persons: str) -> dict[str, str]:
        """Person token -> the domain to record (rare domains as 'other'), for the people
        of `_lines`."""
        common = self._common
        return {
            person: domain if domain in common else "other"
            for person, domain in self.conn.execute(
                "select person_token, domain from activation.recipient_domains"
                " where person_token = any(string_to_array(%s, E'\\n'))",
                (persons,),
            )
        }

    def _write_idempotent(self, rows: list[EventRow], result: FeedbackResult) -> None:
        conn = self.conn
        conn.execute("delete from feedback_page")  # already empty unless a page was retried
        with conn.cursor() as cur, cur.copy("copy feedback_page from stdin") as copy:
            write_row = copy.write_row
            for row in rows:
                write_row(row)
        params = {"destination": self.destination, "domains": self.domains}
        answer = conn.execute(_WRITE_IDEMPOTENT, params).fetchall()
        for event_type, count, _ in answer:
            result.new += count
            result.by_type[event_type] += count
        result.suppressions += answer[0][2] if answer else 0  # the same scalar on every row


def _lines(values: Iterable[str]) -> str | None:
    """Values as one text parameter, a line each (split again by string_to_array): psycopg
    dumps a list of strings through a regex per item, several times slower than a join.
    None if a value holds a line break itself."""
    values = list(values)
    text = "\n".join(values)
    return text if text.count("\n") == len(values) - 1 else None


def _suppress(cur: psycopg.Cursor, destination: str, rows: Iterable[EventRow]) -> int:
    """Suppressions for new events (unsubscribes, complaints, hard bounces): one INSERT."""
    ids, persons, kinds, times = [], [], [], []
    for event_id, _, person, event_type, occurred_at, _, bounce_type in rows:
        kind = suppression_type(event_type, bounce_type)
        if kind is not None:
            ids.append(event_id)
            persons.append(person)
            kinds.append(kind)
            times.append(occurred_at)
    if not ids:
        return 0
    cur.execute(
        "insert into engagement.suppressions (event_id, destination, person_token,"
        " event_type, effective_at)"
        " select e, %s, p, k, w::timestamptz from unnest(%s::text[], %s::text[], %s::text[],"
        " %s::text[]) as u(e, p, k, w)"
        " on conflict (event_id) do nothing",
        (destination, ids, persons, kinds, times),
    )
    return cur.rowcount


# feedback_page into engagement.events, skipping stored ids, and the suppressions its new
# events imply; answers (event type, new events of that type, suppressions added).
_WRITE_IDEMPOTENT = (
    "with new as ("
    " insert into engagement.events (event_id, destination, audience, person_token,"
    "  event_type, occurred_at, machine_open, bounce_type, recipient_domain)"
    " select p.event_id, %(destination)s, p.audience, p.person_token, p.event_type,"
    "  p.occurred_at, p.machine_open, p.bounce_type,"
    "  case when p.domain is null then null"
    "   when p.domain = any(%(domains)s) then p.domain else 'other' end"
    # An index lookup per event (a scalar subquery is never turned into a hash join over
    # the whole domain table): the domain table can be far larger than a page.
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
    " group by event_type"
)

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

import io
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import polars as pl
import psycopg
import pyarrow.csv as pa_csv

from connectors.email.base import EmailEngine, EngineEvent
from connectors.email.events import (
    EVENT_COLUMNS,
    EventBatch,
    RowPage,
    event_frame,
    event_row,
)
from connectors.warehouse.audit import record_audit

# Events per engine request and per transaction when polling: large pages keep the per-request
# and per-commit costs (HTTPS round trip, JSON envelope, fsync) small against the events.
# Engines that cap pages lower answer smaller pages (HttpEngine falls back to 1,000 for an
# engine that refuses large ones); `page_size=` sets it per call, and an engine's
# `events_page_size` replaces it (FileExchangeEngine: larger).
PAGE_SIZE = 20_000
# The first request asks for fewer, and each next one for 4 times more up to PAGE_SIZE: the
# first page is written while the second is fetched, so the pipeline fills at once instead
# of waiting for a full page (most polls find far fewer than PAGE_SIZE events).
FIRST_PAGE = 2_000
COMMIT_EVERY = 1  # events per transaction at least: by default each page commits alone
MIN_DOMAIN_PERSONS = 10
MAX_KNOWN_DOMAINS = 2_000_000  # people whose domain a writer remembers between pages
PROBE_COST = 10  # rows of recipient_domains read in order for the cost of one index probe
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
    page_size: int | None = None,
    min_domain_persons: int = MIN_DOMAIN_PERSONS,
    commit_every: int = COMMIT_EVERY,
) -> FeedbackResult:
    """Poll the engine from the stored cursor until it has nothing new.

    Pages are written in transactions of at least `commit_every` events (by default one
    page each; pages grow from FIRST_PAGE to `page_size` events), each together with the
    cursor after its last page: a crash re-reads at most that many events, which the
    event-id key absorbs. Three steps overlap, each in its own thread: the next page is
    fetched from the engine and mapped to rows, the page before it is prepared (deduplicated,
    given domains, written as CSV), and the one before that is stored and committed with its
    cursor. Engine calls stay one at a time, and pages are stored in order: a page that fails
    to store stops the readback before any later page is stored.
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
    pending: list[EventBatch] = []
    pending_events = 0
    # An engine may ask for larger pages (extract files have no request to pay for).
    page_size = page_size or getattr(engine, "events_page_size", PAGE_SIZE)
    size = min(page_size, FIRST_PAGE)

    storing: Future[None] | None = None

    def settle() -> None:
        """Wait for the page being stored (raising what stopped it)."""
        nonlocal storing
        if storing is not None:
            done, storing = storing, None
            done.result()

    def store(page: Page | None, after: str | None) -> None:
        with conn.transaction():
            if page is not None:
                writer.store(page, result)
            conn.execute(
                "insert into engagement.cursors (destination, cursor) values (%s, %s)"
                " on conflict (destination) do update set cursor = excluded.cursor,"
                " updated_at = now()",
                (destination, after),
            )

    def flush() -> None:
        nonlocal stored, pending_events, storing
        page = writer.prepare(event_frame(pending), settle)
        settle()
        storing = storer.submit(store, page, cursor)
        pending.clear()
        pending_events = 0
        stored = cursor

    with (
        ThreadPoolExecutor(1, thread_name_prefix="feedback-fetch") as fetcher,
        ThreadPoolExecutor(1, thread_name_prefix="feedback-store") as storer,
    ):
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
            pending.append(page.rows)
            pending_events += len(page.rows)
            cursor = page.next_cursor
            if pending_events >= commit_every or (
                not page.read and (pending_events or cursor != stored)
            ):
                flush()
            if not page.read:
                break
        settle()
    with conn.transaction():
        record_audit(conn, "read_feedback", f"{destination}/events", result.new)
    return result


def _row_page(engine: EmailEngine, cursor: str | None, limit: int) -> RowPage:
    """A page as a frame of events (in the fetching thread, so the writer only writes): the
    engine's bulk `event_rows` when it has one, else its EngineEvents turned into rows,
    those without an external id counted as unmapped."""
    event_rows = getattr(engine, "event_rows", None)
    if event_rows is not None:
        page = event_rows(cursor, limit)
    else:
        events = engine.events(cursor, limit)
        rows = [event_row(e) for e in events.events if e.external_id]
        page = RowPage(rows, events.next_cursor, len(events.events), len(events.events) - len(rows))
    page.rows = event_frame([page.rows])
    return page


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

    Fast path: look up the recipient domains of people not seen on an earlier page (by the
    key, or all at once in a large readback), then COPY the new events straight into
    engagement.events and their suppressions into engagement.suppressions (`prepare` builds
    the CSV, `store` sends it, so that a readback prepares a page while it stores another).
    COPY costs PostgreSQL about half the CPU per event of INSERT ... SELECT ... ON CONFLICT,
    which was the bottleneck of readback. If one
    of the ids is stored already (a page read again after a crash, or an event that also
    arrived another way) or a concurrent writer (the webhook applier) stores it meanwhile,
    the COPY fails as a whole (a savepoint) and the page goes the idempotent way: COPY into
    a temp table, then one INSERT ... ON CONFLICT DO NOTHING, which waits for that writer and
    skips its ids. From then on the writer first looks up which ids of a page are stored,
    and COPYs only the others. Pages are handled column-wise from end to end (polars, and
    Arrow's CSV writer for the COPY): building, escaping and sending them row by row in
    Python cost more of the client's time than PostgreSQL spent storing them.
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
        # The domain recorded per person seen on an earlier page of this writer (null: none):
        # a readback sees the same people page after page.
        self._known = pl.DataFrame(schema=_DOMAIN_COLUMNS)
        self._all_known = False  # every recorded domain read: people not known have none
        self._probed = 0  # people looked up through the key, since the memory last started
        # Whether to look up which ids of a page are stored already before the COPY. Ids are
        # new but on a page read again after a crash, or for events that also arrive another
        # way (webhooks beside polling). The lookup cost PostgreSQL about 1 µs an id, a fifth
        # of its time storing events: the writer probes only from its first collision on.
        self._probe = False

    def write(self, events: EventBatch, result: FeedbackResult) -> None:
        """Write mapped events (see connectors.email.events); counts new events and
        suppressions into `result` (the caller counts what it read and left unmapped)."""
        page = self.prepare(events)
        if page is not None:
            self.store(page, result)

    def prepare(self, events: EventBatch, settle: Callable[[], None] = lambda: None) -> Page | None:
        """The events of a page as `store` COPYs them (None: nothing new). The connection
        is used only to look up domains of people not seen before, or stored ids after a
        collision; `settle` is called first (it waits for the page being stored)."""
        frame = event_frame([events])
        if frame.is_empty():
            return None
        # In key order: engine event ids are random, and the primary key's inserts then
        # walk its leaf pages once in order instead of all over (1M events with a hash per
        # member as their ids: 1 s less of PostgreSQL's CPU out of 7). An id repeated
        # within the page counts once: its first (the sort is stable).
        event_id = pl.col("event_id")
        frame = frame.sort("event_id", maintain_order=True).filter(
            event_id.ne_missing(event_id.shift(1))
        )
        if self._probe:
            settle()
            stored = self._stored(frame["event_id"])
            if stored is None:  # a line break inside an id: the general way
                return Page(frame, None, None, 0)
            if stored:
                frame = frame.filter(~event_id.is_in(stored))
                if frame.is_empty():
                    return None
        destination = self.destination
        rows = frame.join(
            self._domains(frame["person_token"], settle),
            on="person_token",
            how="left",
            maintain_order="left",
        )
        rows = rows.select(pl.exclude("recipient_domain"), destination=pl.lit(destination),
                           recipient_domain="recipient_domain")  # fmt: skip
        suppressions = _suppressions(destination, rows)
        return Page(frame, _csv(rows), _csv(suppressions), suppressions.height)

    def store(self, page: Page, result: FeedbackResult) -> None:
        """COPY a prepared page (caller's transaction); its ids collide: the general way."""
        conn = self.conn
        if page.events_csv is None:
            self._write_idempotent(page.frame, result)
            return
        try:
            with conn.transaction(), conn.cursor() as cur:  # a savepoint
                _copy_csv(cur, "engagement.events", _EVENT_COPY_COLUMNS, page.events_csv)
                if page.suppressions:
                    _copy_csv(cur, "engagement.suppressions", _SUPPRESSION_COPY_COLUMNS,
                              page.suppressions_csv)  # fmt: skip
        except psycopg.errors.UniqueViolation:
            self._probe = True  # ids arrive a second way: look them up from now on
            self._write_idempotent(page.frame, result)
            return
        types = page.frame["event_type"].value_counts()
        result.new += page.frame.height
        result.by_type.update(dict(types.iter_rows()))
        result.suppressions += page.suppressions

    def _stored(self, ids: pl.Series) -> list[str] | None:
        """Which of `ids` engagement.events holds already (None: an id with a line break)."""
        lines = _lines(ids)
        if lines is None:
            return None
        with self.conn.transaction():  # its own: the page is stored in another
            found = self.conn.execute(
                "select event_id from engagement.events"
                " where event_id = any(string_to_array(%s, E'\\n'))",
                (lines,),
            ).fetchall()
        return [event_id for (event_id,) in found]

    def _domains(self, persons: pl.Series, settle: Callable[[], None]) -> pl.DataFrame:
        """The domain to record (rare domains as 'other') of every person seen so far,
        asking the database only for people not seen before: through the key, or all of
        them in one read once the probes of this readback would add up to reading the
        whole table (an index probe costs about ten rows read in order). After that,
        people not known have no recorded domain, and pages are prepared without the
        connection."""
        known = self._known
        if self._all_known:
            return known  # people not in it have no recorded domain: the join leaves it null
        distinct = persons.unique().to_frame()
        # An anti join, not is_in: is_in hashes all the known people again for every page
        # (155 ms a page against 800,000 known people; the join 30).
        unseen = distinct.join(known, on="person_token", how="anti")["person_token"]
        if unseen.is_empty():
            return known
        if known.height + unseen.len() > MAX_KNOWN_DOMAINS:
            known, unseen = known.clear(), distinct["person_token"]  # bounded memory
            self._probed = 0
        settle()
        # Read them all when that is the cheaper way, and only if they fit in the memory.
        probes = (self._probed + unseen.len()) * PROBE_COST
        with self.conn.transaction():  # its own: the page is stored in another
            if self._domain_rows_within(min(probes, MAX_KNOWN_DOMAINS)):
                found = self._all_domains()  # everyone known so far included
                known, unseen, self._all_known = known.clear(), distinct["person_token"], True
            else:
                found = self._some_domains(unseen)
                self._probed += unseen.len()
        common = pl.Series(self.domains, dtype=pl.String)
        looked_up = found.with_columns(
            pl.when(pl.col("recipient_domain").is_in(common.implode()))
            .then(pl.col("recipient_domain"))
            .otherwise(pl.lit("other"))
        )
        missing = pl.DataFrame({"person_token": unseen}).join(
            looked_up, on="person_token", how="anti"
        )
        self._known = pl.concat([known, looked_up, missing], how="diagonal")
        return self._known

    def _domain_rows_within(self, limit: int) -> bool:
        """Whether activation.recipient_domains holds at most `limit` rows: the planner's
        estimate, or, for a table never analyzed nor vacuumed (a first readback soon after
        the first sync: the estimate is unknown), its rows counted up to `limit` + 1, which
        costs no more than reading them."""
        (rows,) = self.conn.execute(
            "select reltuples from pg_class where oid = 'activation.recipient_domains'::regclass"
        ).fetchone()
        if rows < 0:
            (rows,) = self.conn.execute(
                "select count(*) from (select from activation.recipient_domains limit %s) r",
                (limit + 1,),
            ).fetchone()
        return rows <= limit

    def _some_domains(self, tokens: pl.Series) -> pl.DataFrame:
        lines = _lines(tokens)
        if lines is None:  # a line break inside a token: as a list (slower to send)
            values, match = tokens.to_list(), "any(%s)"
        else:
            values, match = lines, "any(string_to_array(%s, E'\\n'))"
        found = self.conn.execute(
            "select person_token, domain from activation.recipient_domains"
            f" where person_token = {match}",
            (values,),
        ).fetchall()
        return pl.DataFrame(found, schema=_DOMAIN_COLUMNS, orient="row")

    def _all_domains(self) -> pl.DataFrame:
        """Every recorded domain, as one CSV text (a quoted row a person): COPY TO answers a
        message a row, which psycopg hands over one at a time with the GIL held (3-4 times
        as long for 64,000 people, longer still beside the thread parsing the next page)."""
        (data,) = self.conn.execute(_ALL_DOMAINS_CSV).fetchone()
        return pl.read_csv((data or "").encode(), has_header=False, schema=_DOMAIN_COLUMNS)

    def _write_idempotent(self, frame: pl.DataFrame, result: FeedbackResult) -> None:
        conn = self.conn
        conn.execute("delete from feedback_page")  # already empty unless a page was retried
        with conn.cursor() as cur:
            _copy(cur, "feedback_page", frame)
        params = {"destination": self.destination, "domains": self.domains}
        answer = conn.execute(_WRITE_IDEMPOTENT, params).fetchall()
        for event_type, count, _ in answer:
            result.new += count
            result.by_type[event_type] += count
        result.suppressions += answer[0][2] if answer else 0  # the same scalar on every row


_DOMAIN_COLUMNS = {"person_token": pl.String, "recipient_domain": pl.String}
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="needed")


def _csv_field(column: str) -> str:
    """SQL for the text `column` as a quoted CSV field."""
    return f"""'"' || replace({column}, '"', '""') || '"'"""


# Every recorded domain as CSV text, a person a line (EventWriter._all_domains).
_ALL_DOMAINS_CSV = (
    f"select string_agg({_csv_field('person_token')} || ',' || {_csv_field('domain')}, E'\\n')"
    " from activation.recipient_domains"
)
# The columns of a prepared page's CSV (EventWriter.prepare's select and _suppressions).
_EVENT_COPY_COLUMNS = [*EVENT_COLUMNS, "destination", "recipient_domain"]
_SUPPRESSION_COPY_COLUMNS = ["event_id", "person_token", "event_type", "effective_at",
                             "destination"]  # fmt: skip


@dataclass(slots=True)
class Page:
    """A page of new events prepared for COPY (EventWriter.prepare); CSV None: the page
    goes the general way (an id holds a line break)."""

    frame: pl.DataFrame
    events_csv: bytes | None
    suppressions_csv: bytes | None
    suppressions: int


def _copy(cur: psycopg.Cursor, table: str, frame: pl.DataFrame) -> None:
    """COPY the frame's columns into the same-named columns of `table`."""
    _copy_csv(cur, table, frame.columns, _csv(frame))


def _csv(frame: pl.DataFrame) -> bytes:
    """The frame as tab-separated CSV without a header, as Arrow writes it: every text
    quoted (an empty text as `""`), a null as an empty field, which is how COPY reads
    them. Arrow's writer takes about half the CPU of polars' for a page of events."""
    sink = io.BytesIO()
    pa_csv.write_csv(frame.to_arrow(), sink, _CSV_OPTIONS)
    return sink.getvalue()


def _copy_csv(cur: psycopg.Cursor, table: str, columns: list[str], data: bytes) -> None:
    names = ", ".join(columns)
    with cur.copy(f"copy {table} ({names}) from stdin (format csv, delimiter E'\\t')") as copy:
        copy.write(data)


def _lines(values: pl.Series) -> str | None:
    """Values as one text parameter, a line each (split again by string_to_array): psycopg
    dumps a list of strings through a regex per item, several times slower than a join.
    None if a value holds a line break itself."""
    return None if _line_break_in(values) else "\n".join(values.to_list())


def _line_break_in(values: pl.Series) -> bool:
    return bool(values.str.contains("\n", literal=True).any())


def _suppressions(destination: str, events: pl.DataFrame) -> pl.DataFrame:
    """Suppressions for new events (unsubscribes, complaints, hard bounces), COPYed beside them.

    No conflict check: the events were new a moment ago in this savepoint, so a suppression
    under the same id exists only if its event was purged since (retention): the COPY then
    fails and the page goes the idempotent way, like a concurrent writer's ids.
    """
    event_type, bounce_type = pl.col("event_type"), pl.col("bounce_type")
    return events.filter(
        event_type.is_in(list(SUPPRESSING)) | ((event_type == "bounce") & (bounce_type == "hard"))
    ).select(
        "event_id",
        "person_token",
        event_type.replace({"bounce": "hard_bounce", **SUPPRESSING}),
        effective_at="occurred_at",
        destination=pl.lit(destination),
    )


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

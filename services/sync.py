"""Sync one audience to one engine destination: gate, diff in SQL, ledger, push, acknowledge.

Streaming: members are read in chunks (with their consent events and the ciphertexts of the
declared fields) from one server-side cursor. Members whose vault rows and consent events
match the fingerprints sync_state kept at their last push never leave the database, so an
incremental run reads, gates and decrypts only what changed. Each chunk is gated at push
time with domain/consent.py, only gated people's declared fields are decrypted (audited per
chunk), payloads pass the DLP check, and their hashes are diffed against
activation.sync_state in SQL. Adds and updates are pushed as soon as a batch fills; removes
(people who left, or whose consent lapsed) are computed in SQL at the end. Memory stays
bounded by the chunk size.

Exactly once: ledger rows (with the batch's idempotency key) commit before a batch is
pushed and are acknowledged after, together with the sync state. A crash in between leaves
pending rows; the next run settles them first: people who still pass the gate are simply
diffed again (the engine keys members by external id, so a second upsert cannot duplicate
anyone), people who no longer pass it are removed.

Rows the engine rejects stay out of sync_state, so the next run retries them by itself; a
run that rejects more than `max_reject_share` of its rows is marked `alert`.

Review before first send: a marketing audience with no valid approval for the destination
(services/approvals.py) pushes removals only, and the run is marked `blocked`.

Parts: services/send_gate.py (consent at push time), services/sync_sql_diff.py (the diff),
services/sync_push.py (ledger, push, acknowledge).
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from connectors.email.base import MAX_BATCH, EmailEngine
from connectors.email.errors import EngineError
from connectors.warehouse.arrays import array_literal
from connectors.warehouse.audit import record_audit
from connectors.warehouse.changes import advance_clock
from connectors.warehouse.database import lazy_commits, sibling_connection
from domain.consent import consent_state_on
from domain.send_dlp import check_payload
from domain.sync_diff import SYNC_MODES, payload_hash
from domain.vault_cipher import VaultCipher
from services.approvals import approval_status, current_definition
from services.send_gate import (
    CONSENT_SOURCES,
    consent_events_for,
    events_from_json,
    gate,
    stable_until,
)
from services.sync_push import BatchPusher
from services.sync_sql_diff import SqlDiffer, diff_in_sql
from services.sync_window import ChangeWindow, find_touched, open_window
from services.vault_reader import NewestValues, decrypt_newest

__all__ = [
    "AudienceDefinition",
    "SyncResult",
    "audience_definition",
    "consent_events_for",
    "diff_in_sql",
    "gate",
    "last_dry_run",
    "sync_audience",
    "sync_audiences",
]

log = logging.getLogger(__name__)

BATCH_SIZE = MAX_BATCH  # members per engine request
CHUNK_SIZE = 5000  # members gated, decrypted and diffed together
# Engine requests in flight at once, for engines that may be shared between threads: the
# engine works on a batch while the hub gates, decrypts and diffs the next. A first sync of
# 100,000 members took 23 s one request at a time, 18 s with 2 and 17 s with 4 in flight.
CONCURRENCY = 4
MAX_REJECT_SHARE = 0.05
CONTACT_COLUMN = "email"
SYNC_LOCK_CLASS = 7262006  # advisory lock namespace: one sync per destination x audience

Progress = Callable[[str, int, int], None]  # (phase, done, total)
Fingerprints = tuple[str, str, date]  # (vault rows, consent events, decision stable until)


@dataclass
class AudienceDefinition:
    audience: str
    purpose: str
    personalization_fields: list[str]


@dataclass
class SyncResult:
    run_id: str
    destination: str
    audience: str
    purpose: str
    mode: str
    dry_run: bool
    added: int = 0
    updated: int = 0
    removed: int = 0
    rejected: int = 0
    resumed: int = 0
    held_back: int = 0  # members a blocked run did not add or update
    unchanged: int = 0  # members whose inputs did not change since their last push
    batches: int = 0
    excluded_by_reason: Counter = field(default_factory=Counter)
    rejected_by_code: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    status: str = "running"
    blocked_reason: str | None = None
    error_code: str | None = None

    @property
    def excluded(self) -> int:
        return sum(self.excluded_by_reason.values())

    @property
    def attempted(self) -> int:
        return self.added + self.updated + self.removed + self.rejected

    @property
    def reject_share(self) -> float:
        return self.rejected / self.attempted if self.attempted else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "destination": self.destination,
            "audience": self.audience,
            "purpose": self.purpose,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "status": self.status,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "excluded": self.excluded,
            "excluded_by_reason": dict(self.excluded_by_reason),
            "rejected": self.rejected,
            "rejected_by_code": dict(self.rejected_by_code),
            "resumed": self.resumed,
            "held_back": self.held_back,
            "unchanged": self.unchanged,
            "blocked_reason": self.blocked_reason,
            "seconds": round(self.seconds, 3),
        }


def audience_definition(conn: psycopg.Connection, audience: str) -> AudienceDefinition:
    row = conn.execute(
        "select purpose, personalization_fields from marts.segment_catalog where audience = %s",
        (audience,),
    ).fetchone()
    if row is None:
        raise LookupError(f"unknown audience {audience!r}: not in marts.segment_catalog")
    purpose, fields = row
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    return AudienceDefinition(audience, purpose, list(fields or []))


def sync_audience(
    conn: psycopg.Connection,
    engine: EmailEngine,
    cipher: VaultCipher,
    *,
    destination: str,
    audience: str,
    day: date | None = None,
    mode: str = "mirror",
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    chunk_size: int = CHUNK_SIZE,
    concurrency: int = CONCURRENCY,
    max_reject_share: float = MAX_REJECT_SHARE,
    manifest_path: Path | None = None,
    on_progress: Progress | None = None,
    window: ChangeWindow | None = None,
) -> SyncResult:
    """Diff the audience against what `destination` holds and push the difference. With a
    `window` (services/sync_window.py, opened on `conn`), the run shares that window's clock
    advance and change lookups with the other syncs of its pass."""
    if mode not in SYNC_MODES:
        raise ValueError(f"unknown sync mode {mode!r}; expected one of {SYNC_MODES}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH}")
    started = time.monotonic()
    _reserve_temp_buffers(conn)
    day = day or datetime.now(UTC).date()
    definition = audience_definition(conn, audience)
    segment = current_definition(conn, audience, manifest_path)
    run_id = f"sync-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    result = SyncResult(run_id, destination, audience, definition.purpose, mode, dry_run)
    conn.execute(
        "insert into activation.sync_runs (run_id, destination, audience, purpose, mode,"
        " dry_run, evaluated_on, definition_hash) values (%s, %s, %s, %s, %s, %s, %s, %s)",
        (run_id, destination, audience, definition.purpose, mode, dry_run, day, segment.hash()),
    )
    conn.commit()
    if not _try_lock(conn, destination, audience):
        _finish_run(conn, result, "failed", started, error_code="SYNC_ALREADY_RUNNING")
        raise RuntimeError(f"another sync of {audience} to {destination} is running")
    pusher: BatchPusher | None = None
    next_since: int | None = None
    try:
        approval = approval_status(conn, audience, destination, manifest_path, segment)
        conn.commit()
        if not approval.may_send:
            result.blocked_reason = "SYNC_APPROVAL_REQUIRED"
            log.warning(
                "sync %s -> %s: marketing audience without a valid approval; pushing "
                "removals only (run `hub approve %s`)",
                audience,
                destination,
                audience,
            )
        forced_removes: list[str] = []
        if not dry_run:
            engine.ensure_audience(audience, audience, definition.purpose)
            result.resumed, forced_removes = _resume_pending(conn, definition, destination, day)
            pusher = BatchPusher(conn, engine, run_id, definition, destination, result, concurrency)
        _ensure_statistics(conn)
        columns = sorted({CONTACT_COLUMN, *definition.personalization_fields})
        since = _watermark(conn, destination, audience, columns, definition.purpose)
        if pusher is not None and not result.blocked_reason:
            # Changes stamped from here on are the next run's (connectors/warehouse/changes.py).
            next_since = window.epoch if window is not None else advance_clock(conn)
        # The member query sorts and aggregates per person; give it memory instead of disk.
        conn.execute(f"set work_mem = '{SYNC_WORK_MEM}'")  # a constant, never input
        # Only the ledger's intent must be on disk before a push (services/sync_push.py
        # commits it durably, and with it every commit before); the rest - audit records,
        # exclusions, fingerprints, run bookkeeping - waits for no disk flush.
        lazy_commits(conn)
        differ = SqlDiffer(conn, destination, audience, mode, leavers_sql=SYNC_LEAVERS)
        _stream_members(
            conn,
            cipher,
            definition,
            day,
            differ,
            result,
            chunk_size,
            on_progress,
            since=since,
            window=window,
            push=pusher,
            blocked=bool(result.blocked_reason) and not dry_run,
            batch_size=batch_size,
        )
        removes = differ.removes(conn, definition.purpose, day, forced_removes)
        if dry_run or pusher is None:
            result.removed = len(removes)
        else:
            for start in range(0, len(removes), batch_size):
                pusher.push("remove", removes[start : start + batch_size], {}, {}, {})
                if on_progress:
                    on_progress("remove", min(start + batch_size, len(removes)), len(removes))
            pusher.finish()
            differ.unvouch_excluded(conn)
        differ.close(conn)
    except BaseException as error:
        _recover(conn, pusher)
        code = error.code if isinstance(error, EngineError) else "SYNC_FAILED"
        _finish_run(conn, result, "failed", started, error_code=code)
        raise
    finally:
        _unlock(conn, destination, audience)
    status = "succeeded"
    if result.blocked_reason:
        status = "blocked"
    elif result.reject_share > max_reject_share:
        status = "alert"
        log.warning(
            "sync %s -> %s: the engine rejected %d of %d rows (%.1f%%, limit %.1f%%): %s",
            audience,
            destination,
            result.rejected,
            result.attempted,
            100 * result.reject_share,
            100 * max_reject_share,
            dict(result.rejected_by_code),
        )
    if next_since is not None:  # taken only by a run that may push (not dry, not blocked)
        _store_watermark(conn, destination, audience, columns, definition.purpose, next_since)
    _finish_run(conn, result, status, started)
    if window is None:  # a pass refreshes them once, after its last run
        _refresh_statistics(conn, result.added + result.removed)
    return result


def sync_audiences(
    conn: psycopg.Connection,
    engine: EmailEngine,
    cipher: VaultCipher,
    audiences: Iterable[str],
    lanes: int | None = None,
    **options: Any,
) -> Iterator[SyncResult]:
    """sync_audience for each audience (same options), in one change window: one clock
    advance, and the members changed since a watermark found once per connection for all of
    them (services/sync_window.py). Yields each result, in the order given, as its run
    finishes.

    With an engine that may be shared between threads, `lanes` (default `AUDIENCE_LANES`)
    audiences sync at once, each on a connection of its own, the largest started first.
    One audience's member query keeps PostgreSQL busy for seconds before its first row
    while the engine has nothing to do; the pushes of the audience beside it fill that
    time."""
    window = open_window(conn)
    audiences = list(audiences)
    lanes = min(AUDIENCE_LANES if lanes is None else lanes, len(audiences))
    written = 0
    if lanes < 2 or not getattr(engine, "thread_safe", False):
        for audience in audiences:
            result = sync_audience(
                conn, engine, cipher, audience=audience, window=window, **options
            )
            written += result.added + result.removed
            yield result
    else:
        for result in _in_lanes(conn, engine, cipher, audiences, window, lanes, options):
            written += result.added + result.removed
            yield result
    _refresh_statistics(conn, written)


# Audiences synced at once by sync_audiences. The first sync of every audience at 1M
# patients took 116 s one audience at a time and 86 s in two lanes (one run each, before
# the member query's temp buffers and join order were tuned); three lanes were no faster
# than two at 100k.
AUDIENCE_LANES = 2


def _in_lanes(
    conn: psycopg.Connection,
    engine: EmailEngine,
    cipher: VaultCipher,
    audiences: list[str],
    window: ChangeWindow,
    lanes: int,
    options: dict[str, Any],
) -> Iterator[SyncResult]:
    """sync_audience over `audiences` on `lanes` threads, each with a connection of its own
    (the caller may use `conn` between results) and its own view of the window: the same
    clock advance, with the changed members found again in each session's temp table."""
    free: queue.SimpleQueue[tuple[psycopg.Connection, ChangeWindow]] = queue.SimpleQueue()
    with ExitStack() as stack:
        for _ in range(lanes):
            free.put((stack.enter_context(sibling_connection(conn)), ChangeWindow(window.epoch)))

        def run(audience: str) -> SyncResult:
            lane, lane_window = free.get()  # one is free whenever a pool thread starts a run
            try:
                return sync_audience(
                    lane, engine, cipher, audience=audience, window=lane_window, **options
                )
            finally:
                free.put((lane, lane_window))

        pool = stack.enter_context(ThreadPoolExecutor(lanes, thread_name_prefix="sync-lane"))
        started = {a: pool.submit(run, a) for a in _largest_first(conn, audiences)}
        futures = [started[a] for a in audiences]
        try:
            for future in futures:
                yield future.result()
        finally:  # a failed run (or a caller that stops early) starts no further runs
            for future in futures:
                future.cancel()
            wait(futures)


# Session memory for temp tables (PostgreSQL's default is 8 MB), which hold every changed
# member: at 1M patients 580,000 rows (58 MB) for the largest audience, which the member
# query reads in key order. With 8 MB it read 504,000 pages back from the OS cache, and that
# audience's first sync took 71.8 s instead of 63.5 s (one run each). Settable only before
# the session's first temp table.
SYNC_TEMP_BUFFERS = "256MB"


def _reserve_temp_buffers(conn: psycopg.Connection) -> None:
    """Room for the sync's temp tables, when the session has used none yet (it has no temp
    schema): the first run on a connection sets it, whoever opened the connection."""
    (unused,) = conn.execute("select pg_my_temp_schema() = 0").fetchone()
    if unused:
        conn.execute(f"set temp_buffers = '{SYNC_TEMP_BUFFERS}'")  # a constant, never input
    conn.commit()


def _largest_first(conn: psycopg.Connection, audiences: list[str]) -> list[str]:
    """The audiences, largest first by the planner's estimate of their share of
    marts.audience_membership (free, where counting them costs a scan); those it has no
    estimate for keep their order, last. The largest run then starts at once and the others
    fill the lane beside it: at 1M patients one audience holds 71% of all members."""
    row = conn.execute(
        "select most_common_vals::text::text[], most_common_freqs from pg_stats"
        " where schemaname = 'marts' and tablename = 'audience_membership'"
        " and attname = 'audience'"
    ).fetchone()
    conn.commit()
    share = dict(zip(*row, strict=True)) if row and row[0] else {}
    return sorted(audiences, key=lambda audience: -share.get(audience, 0.0))


# A pass (or lone run) that adds or removes this many members analyses the tables the next
# run plans against. Autovacuum does not count a new destination's 800,000 sync_state rows
# beside 9M others as enough change to, and the planner, taking the destination for a
# handful of rows, compared each of 3,300 candidates with all 2,668 exclusions of an
# audience in the next run at 1M (0.65 s for one audience, instead of milliseconds).
ANALYZE_AFTER = 10_000


def _refresh_statistics(conn: psycopg.Connection, written: int) -> None:
    if written >= ANALYZE_AFTER:
        for table in ("activation.sync_state", "activation.sync_exclusions"):
            conn.execute(f"analyze {table}")  # a constant: never input
        conn.commit()


# --- streaming the audience ----------------------------------------------------------------


def last_dry_run(
    conn: psycopg.Connection, destination: str, audience: str
) -> dict[str, object] | None:
    """The latest stored dry run of this destination x audience, for comparison."""
    row = conn.execute(
        "select run_id, added, updated, removed, excluded, excluded_by_reason, started_at"
        " from activation.sync_runs where destination = %s and audience = %s and dry_run"
        " and status <> 'failed' order by started_at desc limit 1",
        (destination, audience),
    ).fetchone()
    if row is None:
        return None
    keys = ("run_id", "added", "updated", "removed", "excluded", "excluded_by_reason", "at")
    return dict(zip(keys, row, strict=True))


def _stream_members(
    conn: psycopg.Connection,
    cipher: VaultCipher,
    definition: AudienceDefinition,
    day: date,
    differ: SqlDiffer,
    result: SyncResult,
    chunk_size: int,
    on_progress: Progress | None,
    *,
    since: int | None,
    window: ChangeWindow | None,
    push: BatchPusher | None,
    blocked: bool,
    batch_size: int,
) -> None:
    """Gate, decrypt, hash and diff the members chunk by chunk; push full batches (when
    `push` is given), count them (dry run) or, for a blocked run, only note who is not
    wanted: nothing is decrypted then, since nothing will be sent.

    A member already at the engine whose vault rows and consent events are unchanged since
    it was last synced (and whose consent cannot have expired or come into effect since)
    is unchanged by construction: the database recognises it by the fingerprints in
    sync_state and never sends it here, so it is neither re-gated nor decrypted, and an
    incremental run reads only what changed. A consent change alters the consent
    fingerprint, and a decision reaching its end date fails `consent_valid_until`, so such
    a member always comes back and is gated again. Everyone who comes back - and everyone
    about to be pushed - goes through domain/consent.py on the send day.
    """
    columns = [CONTACT_COLUMN, *definition.personalization_fields]
    pending: dict[str, list[str]] = {"add": [], "update": []}
    payloads: dict[str, dict[str, object]] = {}
    hashes: dict[str, str] = {}
    refs: dict[str, str | None] = {}
    prints: dict[str, Fingerprints] = {}
    refresh = push is not None and not blocked
    done = 0
    params = {
        "audience": definition.audience,
        "destination": differ.destination,
        "purpose": definition.purpose,
        "columns": sorted(set(columns)),
        "day": day,
        "decrypt": not blocked,  # a blocked run decrypts nothing
        "since": since,
        "no_suppressions": "%" + _NO_SUPPRESSIONS,
    }
    find_touched(conn, window, since, params["columns"])
    total, changed, cached = _load_changed(conn, params)
    if cached:
        result.excluded_by_reason.update(cached)
        differ.exclude_unsynced_sql(
            conn, "select person_token from sync_changed where excluded_reason is not null"
        )
        done += sum(cached.values())
    # WITH HOLD: the cursor outlives the commits of the ledger writes between batches.
    # Binary rows: the ciphertext arrays need no hex text on either side (at 1M patients
    # the runs waited 10.8 s in all to fetch the members as text, 7.2 s in binary).
    query, scan = _member_inputs_sql(conn, changed - sum(cached.values()))
    with conn.cursor("sync_member_inputs", withhold=True) as cursor:
        if scan:
            conn.execute(f"set work_mem = '{SCAN_WORK_MEM}'")  # a constant, never input
        cursor.execute(query, params, binary=True)
        # The first commit after the DECLARE runs the whole query to keep its rows (seconds
        # for a large audience). Here, not at the first chunk's commit: that one holds the
        # audit chain's lock (the decryption's record), which the runs beside this one need
        # for theirs. At 1M patients they waited 10 s in all for it.
        conn.commit()
        if scan:
            conn.execute(f"set work_mem = '{SYNC_WORK_MEM}'")
        while rows := cursor.fetchmany(chunk_size):
            allowed: dict[str, str | None] = {}
            chunk_prints: dict[str, Fingerprints] = {}
            excluded: list[str] = []
            remembered: list[tuple[str, str, str, date]] = []
            ciphertexts: list[NewestValues] = []
            for person, events_json, source_fp, consent_fp, subjects, *newest in rows:
                events = events_from_json(events_json)
                decision = consent_state_on(events, definition.purpose, day)
                if not decision.allowed:
                    result.excluded_by_reason[decision.reason] += 1
                    excluded.append(person)
                    if refresh:
                        remembered.append(
                            (person, decision.reason, consent_fp, stable_until(events, day))
                        )
                    continue
                allowed[person] = decision.source_ref
                if subjects:  # gated in: its newest ciphertexts go on to be decrypted
                    ciphertexts.append((person, subjects, *newest))
                chunk_prints[person] = (source_fp or "", consent_fp, stable_until(events, day))
            done += len(rows)
            if blocked:
                differ.exclude(conn, excluded)
                result.held_back += len(allowed)
                conn.commit()
                if on_progress:
                    on_progress("diff", done, total)
                continue
            chunk_payloads, refused = _payloads(
                conn, cipher, definition, list(allowed), ciphertexts, columns
            )
            # The decryption's audit record, on its own: the audit chain's lock is held
            # until commit, and the chunk's transaction lasts as long as its pushes, which
            # would stop the runs beside this one from decrypting meanwhile.
            conn.commit()
            result.excluded_by_reason.update(refused.values())
            if refresh:
                remembered.extend(
                    (p, reason, chunk_prints[p][1], chunk_prints[p][2])
                    for p, reason in refused.items()
                )
            _remember_exclusions(conn, differ, remembered)
            differ.exclude(conn, excluded + list(refused))
            chunk_hashes = {p: payload_hash(payload) for p, payload in chunk_payloads.items()}
            adds, updates = differ.chunk(conn, chunk_hashes)
            if refresh:
                changed = set(adds) | set(updates)
                _refresh_fingerprints(
                    conn,
                    differ,
                    {p: chunk_hashes[p] for p in chunk_hashes if p not in changed},
                    chunk_prints,
                )
            if push is None:
                result.added += len(adds)
                result.updated += len(updates)
            else:
                for operation, people in (("add", adds), ("update", updates)):
                    for person in people:
                        payloads[person] = chunk_payloads[person]
                        hashes[person] = chunk_hashes[person]
                        refs[person] = allowed[person]
                        prints[person] = chunk_prints[person]
                    pending[operation].extend(people)
                    while len(pending[operation]) >= batch_size:
                        batch = pending[operation][:batch_size]
                        del pending[operation][:batch_size]
                        push.push_upserts(operation, batch, payloads, hashes, refs, prints)
            conn.commit()  # the chunk's audit records, exclusions and refreshed fingerprints
            if on_progress:
                on_progress("diff", done, total)
    if refresh:
        # Exclusions are read only for members never synced, all of whom are candidates (as
        # is everyone gated this run): the others' (people who left the audience, or whom
        # sync_state holds) are of no further use. Matched against the few candidates, not
        # every member (0.25 s over ten audiences at 1M patients).
        conn.execute(
            "delete from activation.sync_exclusions e where e.destination = %s"
            " and e.audience = %s and not exists (select 1 from sync_candidates c"
            "  where c.person_token = e.person_token and c.member)",
            (differ.destination, differ.audience),
        )
        conn.commit()
    # Everyone the database held back: synced before, and nothing they depend on changed.
    result.unchanged += total - done
    if on_progress and done < total:
        on_progress("diff", total, total)
    if push is not None and not blocked:
        for operation in ("add", "update"):
            if pending[operation]:
                push.push_upserts(operation, pending[operation], payloads, hashes, refs, prints)


# Tables the member query and the vault reader join. Written by bulk loads moments before a
# first sync, they may never have been analysed yet (autovacuum has not come round, or the
# database was restored or copied): the planner then guesses 200 distinct people in
# person_xref and scans the whole vault for every chunk of a few thousand people.
_JOINED_TABLES = (
    "landing.person_xref",
    "vault.contacts",
    "intermediate.int_consent_events",
    "intermediate.int_consent_digests",
    "engagement.suppressions",
    "marts.audience_membership",
    "activation.sync_state",
)


def _ensure_statistics(conn: psycopg.Connection) -> None:
    """ANALYZE the joined tables that have no statistics at all (reltuples = -1: never
    analysed or vacuumed); a no-op once they have some. Only the owner may analyse a table:
    for anyone else PostgreSQL skips it with a warning, which is harmless here."""
    for table in _JOINED_TABLES:
        row = conn.execute(
            "select reltuples from pg_class where oid = to_regclass(%s)"
            " and relkind in ('r', 'p', 'm')",  # tables: a view has no statistics
            (table,),
        ).fetchone()
        if row is not None and row[0] < 0:
            conn.execute(f"analyze {table}")  # names from the constant above, never input
    conn.commit()


# The audience's members, read where dbt wrote them, within the one statement that picks the
# candidates (so from one snapshot, even while dbt rebuilds the table). dbt's unique index
# on (audience, person_token) makes each member appear once; on a table built without it
# (an older project), duplicates are dropped as they are read. Copying the members into a
# temp table first, with a key, cost 1.0 s of a 1%-changed sync of ten audiences at 1M.
_MEMBERS = "select person_token from marts.audience_membership where audience = %(audience)s"
_MEMBERSHIP_IS_UNIQUE = (
    "select exists (select 1 from pg_index i"
    " where i.indrelid = to_regclass('marts.audience_membership') and i.indisunique"
    " and i.indnkeyatts = 2 and (select array_agg(a.attname) from pg_attribute a"
    "  where a.attrelid = i.indrelid and a.attnum = any(i.indkey::int2[]))"
    "  @> array['audience', 'person_token']::name[])"
)


def _members_sql(conn: psycopg.Connection) -> str:
    """The audience's members, each once (a query taking %(audience)s)."""
    (unique,) = conn.execute(_MEMBERSHIP_IS_UNIQUE).fetchone()
    return _MEMBERS if unique else _MEMBERS.replace("select", "select distinct", 1)


SYNC_LEAVERS = "select person_token from sync_candidates where not member"

# What a member's payload and gate decision depend on, as two digests per member: its consent
# events (with the audience's purpose) and the vault rows its payload is decrypted from. Each
# is a count and a sum of 64-bit row hashes: order-independent, so PostgreSQL aggregates them
# by hashing, without sorting every member's rows, and a repeated row is counted, never
# cancelled out. Not security hashes: they only detect change, and their inputs are tokens,
# codes and ciphertexts. A member whose digests (and cached decision's end date) match what
# sync_state kept at its last push is unchanged and never leaves the database.
#
# Only members whose inputs may have changed since the audience's watermark (%(since)s, a
# change epoch: connectors/warehouse/changes.py) are digested again; every other synced
# member keeps the digests it was pushed with. They are: members with vault rows or person
# links written since; members whose consent digest dbt changed since (int_consent_digests
# stamps the digests it rewrites); members with live suppressions now or at their last push
# (few, and compared every run: the feedback loop writes them at any time); members never
# synced, and those sync_state does not vouch for or whose decision has run out. Without a
# watermark (a first run, other declared fields or another purpose) every member is.
_ROW_DIGEST = "count(*)::text || ':' || sum(hashtextextended({row}, 0))::text"
_VAULT_DIGEST = _ROW_DIGEST.format(
    row="v.subject_token || ':' || v.column_name || ':' || v.key_version || ':'"
    " || coalesce(v.effective_at::text, '') || ':' || md5(v.ciphertext)"
)
_NO_SUPPRESSIONS = "/0:"  # how a consent digest without live suppressions ends
# In two statements, the first keeping its candidates in a temp table that is analysed
# before the second joins them: planned as one, the candidates (a few thousand after a small
# change) were estimated at every member, so each audience hashed all 1.1M consent digests
# at 1M patients (0.3-0.4 s each) instead of looking up the few it needed.
_CANDIDATES_SQL = (
    # The members (a query from _members_sql), and how many there are, from the same read.
    " with members as materialized ({members}),"
    " counted as (insert into sync_member_count select count(*) from members),"
    # Members whose vault digest must be recomputed: all of them without a watermark; else
    # synced members sync_state does not vouch for, and members with vault rows or links
    # written since (found by services/sync_window.py). Without a watermark the synced ones
    # are digested here, so those whose rows are as they were pushed are skipped (after a
    # purpose change, most of them). With one, nobody is: a rewritten vault row has a new
    # ciphertext (a fresh nonce), so a touched member's digest differs almost always, and
    # the member query takes it with the ciphertexts it reads anyway (at 1M patients,
    # digesting them here first cost 0.3 s of a 1%-changed sync). Members never synced are
    # candidates anyway, and digested by the member query too, not twice.
    " touched as (select person_token from members"
    "  where %(since)s::bigint is null"
    "  union select person_token from activation.sync_state"
    "  where destination = %(destination)s and audience = %(audience)s"
    "  and source_fingerprint is null"
    "  union select person_token from sync_touched"
    "  where since = %(since)s and columns = %(columns)s::text[]),"
    " consent_touched as (select person_token from intermediate.int_consent_digests"
    "  where change_epoch >= %(since)s"
    "  union select person_token from engagement.suppressions),"
    " sources as (select x.person_token, " + _VAULT_DIGEST + " as fingerprint"
    "  from touched t join activation.sync_state s on %(since)s::bigint is null"
    "  and s.destination = %(destination)s"
    "  and s.audience = %(audience)s and s.person_token = t.person_token"
    "  join landing.person_xref x on x.person_token = t.person_token"
    "  join vault.contact_fields v on v.subject_token = x.subject_token"
    "  where v.column_name = any(%(columns)s) group by x.person_token),"
    # Picked: synced people who left (member false), members never synced, synced members
    # whose decision ran out or who have live suppressions, and synced members whose inputs
    # were written since. One pass over the members and this audience's sync_state finds
    # all but the last, which are few and found through the keys: joining every member with
    # them in that pass made PostgreSQL hash all 600,000 rows of the largest audience at
    # 1M patients (0.2 s). The pass also yields the leavers the removes need (a second pass
    # for them cost 0.7 s over ten audiences).
    " picked as (select coalesce(m.person_token, s.person_token) as person_token,"
    "  m.person_token is not null as member, s.person_token is not null as synced,"
    "  s.source_fingerprint, s.consent_fingerprint, s.consent_valid_until"
    "  from members m full join (select person_token, source_fingerprint,"
    "  consent_fingerprint, consent_valid_until from activation.sync_state"
    "  where destination = %(destination)s and audience = %(audience)s) s"
    "  on s.person_token = m.person_token"
    "  where m.person_token is null or s.person_token is null"
    "  or s.consent_valid_until is null or s.consent_valid_until < %(day)s"
    "  or s.consent_fingerprint is null or s.consent_fingerprint not like %(no_suppressions)s"
    "  union select m.person_token, true, true, s.source_fingerprint, s.consent_fingerprint,"
    "  s.consent_valid_until from (select person_token from touched"
    "  union select person_token from consent_touched) r"
    "  join marts.audience_membership m on m.audience = %(audience)s"
    "  and m.person_token = r.person_token"
    "  join activation.sync_state s on s.destination = %(destination)s"
    "  and s.audience = %(audience)s and s.person_token = r.person_token)"
    " insert into sync_candidates"
    " select p.person_token, p.member, p.synced, t.person_token is not null,"
    "  p.source_fingerprint, p.consent_fingerprint, p.consent_valid_until,"
    "  case when t.person_token is null then p.source_fingerprint"
    "  else f.fingerprint end"
    "  from picked p left join touched t on t.person_token = p.person_token"
    "  left join sources f on f.person_token = p.person_token"
)
_CHANGED_MEMBERS_SQL = (
    "insert into sync_changed"
    # dbt's digest of the modelled events, and the live suppressions received since.
    " with suppressed as (select person_token, "
    + _ROW_DIGEST.format(row="row(event_type, effective_at, event_id)::text")
    + " as digest from engagement.suppressions"
    "  where person_token in (select person_token from sync_candidates where member)"
    "  group by person_token),"
    " inputs as (select c.*,"
    "  %(purpose)s || ':' || coalesce(d.events_digest, '0:') || '/'"
    "  || coalesce(sp.digest, '0:') as current_consent"
    "  from sync_candidates c"
    "  left join intermediate.int_consent_digests d on d.person_token = c.person_token"
    "  left join suppressed sp on sp.person_token = c.person_token where c.member)"
    # A member excluded before (by the gate, or for no address or the DLP check) whose vault
    # rows and links are untouched since the watermark, whose consent digest is the same and
    # whose decision still holds today, is excluded again without being read.
    " select i.person_token, i.fingerprint, i.current_consent,"
    "  case when not i.synced and not i.touched"
    "  and x.consent_fingerprint = i.current_consent"
    "  and x.consent_valid_until >= %(day)s then x.reason end"
    " from inputs i left join activation.sync_exclusions x"
    "  on x.destination = %(destination)s and x.audience = %(audience)s"
    "  and x.person_token = i.person_token"
    " where not i.synced or i.fingerprint is null"
    "  or i.source_fingerprint is distinct from i.fingerprint"
    "  or i.consent_fingerprint is distinct from i.current_consent"
    "  or i.consent_valid_until is null or i.consent_valid_until < %(day)s"
)

# The members that changed, with their consent events (deterministic order, as
# events_from_json reads them) and the ciphertexts of the declared columns' newest values,
# one per column, the only ones services/vault_reader.py decrypts (minimum necessary: at
# 1M patients a first sync read 2.7M vault rows for 580,000 members, over half of them
# older values from other sources). The digest still covers every row. Nothing is
# decrypted here: vault_reader decrypts, for gated people only, and audits.
#
# A member's events are the ones dbt keeps beside their digest (int_consent_digests.events,
# in this order): one row per member instead of aggregating 2.4 events each again for every
# audience (2-3 s of the largest audience's first sync at 1M patients). They are aggregated
# here only for members with live suppressions (which dbt has not seen) or without kept
# events (a table built before dbt kept them).
_EVENTS_ORDERED = (
    "json_agg(json_build_array(e.event_type, e.effective_on, e.purpose, e.expires_on,"
    "  e.source_ref) order by e.effective_on, e.event_type, e.purpose, e.expires_on,"
    "  e.source_ref)::text"
)
_EVENTS_KEPT = (
    "case when d.events is not null and sp.person_token is null then d.events"
    f" else (select coalesce({_EVENTS_ORDERED}, '[]') from ({CONSENT_SOURCES}) e"
    "  where e.person_token = ch.person_token) end"
)
_EVENTS_KEPT_JOINS = (
    " left join intermediate.int_consent_digests d on d.person_token = ch.person_token"
    " left join (select distinct person_token from engagement.suppressions) sp"
    "  on sp.person_token = ch.person_token"
)
_EVENTS_AGGREGATED_JOIN = (
    f" left join (select e.person_token, {_EVENTS_ORDERED} as events"
    f"  from ({CONSENT_SOURCES}) e join sync_changed c on c.person_token = e.person_token"
    "  where c.excluded_reason is null"
    "  group by e.person_token) ev on ev.person_token = ch.person_token"
)
_DIGESTS_KEEP_EVENTS = (
    "select exists (select 1 from pg_attribute where attname = 'events' and not attisdropped"
    " and attrelid = to_regclass('intermediate.int_consent_digests'))"
)
_NEWEST = (
    "row_number() over (partition by {person}v.column_name"
    "  order by v.effective_at desc nulls last, v.subject_token) = 1 as newest"
)
_VAULT_AGGREGATES = (
    "array_agg(v.subject_token order by v.column_name) filter (where v.newest) as subjects,"
    "  array_agg(v.column_name order by v.column_name) filter (where v.newest) as columns,"
    "  array_agg(v.key_version order by v.column_name) filter (where v.newest) as versions,"
    "  array_agg(v.ciphertext order by v.column_name) filter (where v.newest) as blobs, "
    + _VAULT_DIGEST
    + " as fingerprint"
)
_VAULT_COLUMNS = "v.subject_token, v.column_name, v.key_version, v.ciphertext, v.effective_at"
_MEMBER_INPUTS_SQL = (
    "select ch.person_token, {events},"
    "  coalesce(ch.fingerprint, c.fingerprint), ch.consent_fingerprint,"
    "  c.subjects, c.columns, c.versions, c.blobs"
    " from sync_changed ch"
    " {events_joins}"
    " {vault}"
    " where ch.excluded_reason is null"
    " order by ch.person_token"
)
# The vault rows of a few changed members: probed through the indexes, member by member.
_VAULT_PROBED = (
    " left join lateral (select "
    + _VAULT_AGGREGATES
    + "  from (select "
    + _VAULT_COLUMNS
    + ", "
    + _NEWEST.format(person="")
    + "  from landing.person_xref x"
    "  join vault.contact_fields v on v.subject_token = x.subject_token"
    "  where %(decrypt)s and x.person_token = ch.person_token"
    "  and v.column_name = any(%(columns)s)) v) c on true"
)
# The vault rows of many: one pass over the vault, joined by hashing and grouped. The
# members' subjects are found first (OFFSET 0 keeps the planner from merging that step
# into the join), so the vault is hashed against them alone: left to itself, the planner
# hashed all of person_xref (2.5M links at 1M patients), joined the vault to it, and only
# then kept the members' rows (the largest audience's first sync at 1M, EXPLAIN ANALYZE:
# its vault joins 8.6 -> 7.2 s).
_VAULT_SCANNED = (
    " left join (select v.person_token, " + _VAULT_AGGREGATES + "  from (select"
    "  x.person_token, "
    + _VAULT_COLUMNS
    + ", "
    + _NEWEST.format(person="x.person_token, ")
    + "  from (select x.person_token, x.subject_token from sync_changed c2"
    "  join landing.person_xref x on x.person_token = c2.person_token"
    "  where c2.excluded_reason is null offset 0) x"
    "  join vault.contact_fields v on v.subject_token = x.subject_token"
    "  where %(decrypt)s and v.column_name = any(%(columns)s)) v"
    "  group by v.person_token) c on c.person_token = ch.person_token"
)
# Sort memory for the member query and the statements around it, which sort and aggregate
# per person. The vault scan sorts every vault row of its members by person and column (at
# 1M patients 2.7M rows for the largest audience): with 256 MB it spilled 400 MB to disk and
# the query took 16.5 s, with 1 GB 13.7 s (beside the other lane's runs, one run each); the
# first sync of all audiences, alternating runs: 66.6 and 66.6 s before, 64.0 and 66.3 s.
SYNC_WORK_MEM = "256MB"
SCAN_WORK_MEM = "1GB"
# A probe costs about as much as scanning 100 vault rows (one per subject), so the scan wins
# once the members to read exceed a hundredth of the vault's rows. Measured at 1M patients
# (2.57M vault rows), the first sync of every audience forced to probe, then to scan (one run
# each, audiences side by side): 7,700-20,200 members 1.6-3.0 s probed against 2.0-3.9 s
# scanned, 24,500-32,800 members about even (3.5-4.7 s), 54,300 members 9.4 against 7.4 s,
# 546,000 60.6 against 57.8 s. (With a row per field, 16.6M of them, the crossover was at
# ~166,000 members: the scan read six times the rows.)
_PROBES_PER_SCAN = 100


def _member_inputs_sql(conn: psycopg.Connection, members: int) -> tuple[str, bool]:
    """The member query for `members` members, reading the vault by probe or by scan,
    whichever costs less, and whether it scans."""
    (vault_rows,) = conn.execute(
        "select greatest(reltuples, 0) from pg_class where oid = 'vault.contacts'::regclass"
    ).fetchone()
    scan = members * _PROBES_PER_SCAN > vault_rows > 0
    (kept,) = conn.execute(_DIGESTS_KEEP_EVENTS).fetchone()
    query = _MEMBER_INPUTS_SQL.format(
        events=_EVENTS_KEPT if kept else "coalesce(ev.events, '[]')",
        events_joins=_EVENTS_KEPT_JOINS if kept else _EVENTS_AGGREGATED_JOIN,
        vault=_VAULT_SCANNED if scan else _VAULT_PROBED,
    )
    return query, scan


def _load_changed(conn: psycopg.Connection, params: dict[str, object]) -> tuple[int, int, Counter]:
    """The members sync_state does not vouch for into the session's temp table sync_changed,
    by way of sync_candidates (the members whose inputs may have changed, and the leavers);
    both analysed, so the next query reads a few members by index and many by hash. Returns
    how many members the audience has, how many changed, and how many of those a past
    exclusion still holds for, by reason."""
    conn.execute(
        "create temp table if not exists sync_changed (person_token text primary key,"
        " fingerprint text, consent_fingerprint text, excluded_reason text)"
    )
    conn.execute("create temp table if not exists sync_member_count (members bigint)")
    conn.execute("truncate sync_changed, sync_member_count")
    conn.execute("drop table if exists pg_temp.sync_candidates")
    conn.execute(
        "create temp table sync_candidates (person_token text not null,"
        " member boolean, synced boolean, touched boolean, source_fingerprint text,"
        " consent_fingerprint text, consent_valid_until date, fingerprint text)"
    )
    conn.execute(_CANDIDATES_SQL.format(members=_members_sql(conn)), params)
    (members,) = conn.execute("select members from sync_member_count").fetchone()
    # Indexed once loaded (a key built row by row as 580,000 rows arrive costs 3.4 s, built
    # over them 1.0 s), for the statements that look people up in it: told that a
    # destination new to sync_exclusions has no rows there, the planner once scanned every
    # candidate of a first sync for each of its exclusions (minutes).
    conn.execute("create index on sync_candidates (person_token)")
    conn.execute("analyze sync_candidates")
    changed = conn.execute(_CHANGED_MEMBERS_SQL, params).rowcount
    conn.execute("analyze sync_changed")
    return (
        members,
        changed,
        Counter(
            dict(
                conn.execute(
                    "select excluded_reason, count(*) from sync_changed"
                    " where excluded_reason is not null group by 1"
                ).fetchall()
            )
        ),
    )


def _remember_exclusions(
    conn: psycopg.Connection, differ: SqlDiffer, excluded: list[tuple[str, str, str, date]]
) -> None:
    """Members this run excluded, with their consent digest and the last day the gate's
    decision holds: while both hold and their vault rows are untouched, later runs count
    them without reading, gating or decrypting them again."""
    if not excluded:
        return
    people, reasons, prints, until = (list(column) for column in zip(*excluded, strict=True))
    conn.execute(
        "insert into activation.sync_exclusions (destination, audience, person_token, reason,"
        " consent_fingerprint, consent_valid_until) select %s, %s, p, r, cf, vu"
        " from unnest(%s::text[], %s::text[], %s::text[], %s::date[]) as t(p, r, cf, vu)"
        " on conflict (destination, audience, person_token) do update"
        " set reason = excluded.reason, consent_fingerprint = excluded.consent_fingerprint,"
        "  consent_valid_until = excluded.consent_valid_until, excluded_at = now()",
        (
            differ.destination,
            differ.audience,
            *(array_literal(column) for column in (people, reasons, prints, until)),
        ),
    )


def _refresh_fingerprints(
    conn: psycopg.Connection,
    differ: SqlDiffer,
    unchanged: dict[str, str],
    prints: dict[str, Fingerprints],
) -> None:
    """Remember the inputs of members found unchanged after decrypting them, so the next
    run can skip them (only where sync_state holds exactly this payload)."""
    if not unchanged:
        return
    people = list(unchanged)
    conn.execute(
        "update activation.sync_state s set source_fingerprint = t.sf,"
        " consent_fingerprint = t.cf, consent_valid_until = t.vu"
        " from unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::date[])"
        "  as t(p, h, sf, cf, vu)"
        " where s.destination = %s and s.audience = %s and s.person_token = t.p"
        "  and s.payload_hash = t.h",
        (
            array_literal(people),
            array_literal(unchanged[p] for p in people),
            array_literal(prints[p][0] for p in people),
            array_literal(prints[p][1] for p in people),
            array_literal(prints[p][2] for p in people),
            differ.destination,
            differ.audience,
        ),
    )


def _payloads(
    conn: psycopg.Connection,
    cipher: VaultCipher,
    definition: AudienceDefinition,
    people: list[str],
    ciphertexts: list[NewestValues],
    columns: list[str],
) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    """Decrypt the declared columns of gated people (audited) and build DLP-checked payloads;
    also returns the people refused, with why (no address, or the DLP check)."""
    if not people:
        return {}, {}
    contacts = decrypt_newest(
        conn, cipher, ciphertexts, columns, definition.purpose, f"sync {definition.audience}"
    )
    payloads: dict[str, dict[str, object]] = {}
    refused: dict[str, str] = {}
    for person in people:
        contact = contacts.get(person, {})
        email = contact.get(CONTACT_COLUMN)
        if not email:
            refused[person] = "no_email"
            continue
        fields = {f: contact.get(f) for f in definition.personalization_fields}
        if check_payload(email, fields, definition.personalization_fields):
            # Names of fields and kinds only; the finding never carries the value.
            refused[person] = "dlp_refused"
            continue
        payloads[person] = {"email": email, "fields": fields}
    return payloads, refused


# --- resuming, locking, bookkeeping --------------------------------------------------------


# The runs of a destination x audience that may have left pending ledger rows: only a run
# that never finished (killed while 'running', or 'failed') can, and only one since the
# latest run that finished, since every run settles all pending rows before it pushes
# (the advisory lock keeps runs of one destination x audience from overlapping). Found
# this way, pending rows need no index on the ledger's status (schema.sql says why).
_UNFINISHED_RUNS = (
    "select r.run_id from activation.sync_runs r"
    " where r.destination = %(destination)s and r.audience = %(audience)s"
    " and not r.dry_run and r.status in ('running', 'failed')"
    " and r.started_at >= coalesce((select max(f.started_at) from activation.sync_runs f"
    "  where f.destination = %(destination)s and f.audience = %(audience)s"
    "  and not f.dry_run and f.status not in ('running', 'failed')), '-infinity')"
)


def _resume_pending(
    conn: psycopg.Connection, definition: AudienceDefinition, destination: str, day: date
) -> tuple[int, list[str]]:
    """Settle batches a crashed run wrote to the ledger but never acknowledged.

    Their outcome at the engine is unknown. The engine keys members by external id, so
    re-pushing is harmless: people who still pass the gate simply reappear in this run's
    diff (they are not in sync_state). People who no longer pass it must not be pushed
    again but may already be at the engine, so they are removed.
    Returns (pending rows settled, people to remove).
    """
    where = {"destination": destination, "audience": definition.audience}
    pending = conn.execute(
        "select distinct person_token, operation from activation.ledger"
        f" where run_id in ({_UNFINISHED_RUNS}) and status = 'pending'",
        where,
    ).fetchall()
    if not pending:
        return 0, []
    upserted = sorted({p for p, operation in pending if operation != "remove"})
    decisions = gate(conn, upserted, definition.purpose, day)
    to_remove = [p for p in upserted if not decisions[p].allowed]
    settled = conn.execute(
        "update activation.ledger set status = 'superseded', acked_at = now()"
        f" where run_id in ({_UNFINISHED_RUNS}) and status = 'pending'",
        where,
    ).rowcount
    conn.commit()
    return settled, to_remove


def _recover(conn: psycopg.Connection, pusher: BatchPusher | None) -> None:
    """After a failure: keep what the engine acknowledged, drop the open cursor."""
    if conn.closed:
        return
    conn.rollback()
    if pusher is not None:
        pusher.abandon()
    conn.execute("close all")  # a WITH HOLD cursor would outlive the failed run
    conn.commit()


def _watermark(
    conn: psycopg.Connection, destination: str, audience: str, columns: list[str], purpose: str
) -> int | None:
    """The change epoch from which this destination x audience must look for changed
    inputs; None (look at every member) after no successful run, or when the audience now
    declares other fields or another purpose than the run that set the watermark read (a
    watermark from before purposes were kept has none, and is not trusted either)."""
    row = conn.execute(
        "select since_epoch from activation.sync_watermarks where destination = %s"
        " and audience = %s and columns = %s::text[] and purpose = %s",
        (destination, audience, columns, purpose),
    ).fetchone()
    return row[0] if row else None


def _store_watermark(
    conn: psycopg.Connection,
    destination: str,
    audience: str,
    columns: list[str],
    purpose: str,
    since: int,
) -> None:
    """After a run that settled every member it was given (pushed, excluded, rejected or
    unchanged): the next run looks for changes from the epoch this one started."""
    conn.execute(
        "insert into activation.sync_watermarks (destination, audience, columns, purpose,"
        " since_epoch) values (%s, %s, %s, %s, %s) on conflict (destination, audience)"
        " do update set columns = excluded.columns, purpose = excluded.purpose,"
        "  since_epoch = excluded.since_epoch, updated_at = now()",
        (destination, audience, columns, purpose, since),
    )


def _try_lock(conn: psycopg.Connection, destination: str, audience: str) -> bool:
    row = conn.execute(
        "select pg_try_advisory_lock(%s, hashtext(%s))",
        (SYNC_LOCK_CLASS, f"{destination}/{audience}"),
    ).fetchone()
    conn.commit()
    return bool(row[0])


def _unlock(conn: psycopg.Connection, destination: str, audience: str) -> None:
    if conn.closed:
        return
    conn.rollback()
    conn.execute("reset work_mem")
    conn.execute("reset synchronous_commit")
    conn.execute(
        "select pg_advisory_unlock(%s, hashtext(%s))",
        (SYNC_LOCK_CLASS, f"{destination}/{audience}"),
    )
    conn.commit()


def _finish_run(
    conn: psycopg.Connection,
    result: SyncResult,
    status: str,
    started: float,
    error_code: str | None = None,
) -> None:
    result.status = status
    result.error_code = error_code
    result.seconds = time.monotonic() - started
    conn.execute(
        "update activation.sync_runs set finished_at = now(), status = %s, added = %s,"
        " updated = %s, removed = %s, excluded = %s, rejected = %s, excluded_by_reason = %s,"
        " seconds = %s, resumed = %s, blocked_reason = %s, reject_share = %s, error_code = %s"
        " where run_id = %s",
        (
            status,
            result.added,
            result.updated,
            result.removed,
            result.excluded,
            result.rejected,
            orjson.dumps(dict(result.excluded_by_reason)).decode(),
            result.seconds,
            result.resumed,
            result.blocked_reason,
            result.reject_share,
            error_code,
            result.run_id,
        ),
    )
    record_audit(
        conn,
        "sync_dry_run" if result.dry_run else "sync",
        f"{result.destination}/{result.audience}",
        result.added + result.updated + result.removed,
        purpose=result.purpose,
        role="hub_sender",
    )
    conn.commit()

"""Pushing a sync's batches: ledger first, then the engine, then the acknowledgement.

Each batch's ledger rows (with its idempotency key) commit before the engine is called, and
the engine's per-row answers are written back - ledger status and error code, sync_state,
recipient domains - in one transaction. Up to `concurrency` batches are in flight when the
engine can be shared between threads: each goes through ledger, engine and acknowledgement
on a pool thread, writing on a connection of the pushes' own, so the caller's thread reads
and gates the next members meanwhile. Otherwise all of it runs on the caller's thread and
connection.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import psycopg

from connectors.email.base import EmailEngine, Member, MemberResult
from connectors.email.errors import EngineError
from connectors.warehouse.arrays import array_literal
from connectors.warehouse.database import durable_commit, lazy_commits, sibling_connection

if TYPE_CHECKING:
    from services.sync import AudienceDefinition, SyncResult


@dataclass
class _Batch:
    operation: str
    batch_key: str
    people: list[str]
    hashes: dict[str, str]
    domains: dict[str, str]
    prints: dict[str, tuple[str, str, date]] = field(default_factory=dict)


class BatchPusher:
    """Ledger, push, acknowledge; up to `concurrency` batches in flight.

    With one batch at a time (an engine that must not be shared between threads) all of it
    runs on the caller's thread and connection. With more, each batch runs on a pool thread
    and its ledger rows and acknowledgement go through one writer connection, a batch's
    statements at a time: at 100k patients they were 2.8 s of an 11.4 s first sync on the
    caller's thread, which now reads and gates the next members while PostgreSQL writes.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        engine: EmailEngine,
        run_id: str,
        definition: AudienceDefinition,
        destination: str,
        result: SyncResult,
        concurrency: int,
    ) -> None:
        self.engine, self.run_id = engine, run_id
        self.definition, self.destination, self.result = definition, destination, result
        shareable = bool(getattr(engine, "thread_safe", False))
        self.concurrency = max(1, concurrency) if shareable else 1
        self.pool: ThreadPoolExecutor | None = None
        self.conn = conn  # where ledger rows and acknowledgements are written
        if self.concurrency > 1:
            self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sync-push")
            self.conn = sibling_connection(conn)
            lazy_commits(self.conn)
        self.writing = threading.Lock()  # one batch's statements at a time on self.conn
        self.inflight: deque[Future[None]] = deque()

    def push_upserts(
        self,
        operation: str,
        people: list[str],
        payloads: dict[str, dict[str, object]],
        hashes: dict[str, str],
        refs: dict[str, str | None],
        prints: dict[str, tuple[str, str, date]],
    ) -> None:
        members = [
            Member(p, payloads[p]["email"], payloads[p]["fields"])  # type: ignore[arg-type]
            for p in people
        ]
        domains = {p: recipient_domain(payloads[p]["email"]) for p in people}  # type: ignore[arg-type]
        batch_hashes = {p: hashes[p] for p in people}
        batch_prints = {p: prints[p] for p in people}
        batch_refs = {p: refs[p] for p in people}
        self.push(operation, people, batch_hashes, batch_refs, domains, members, batch_prints)
        for person in people:  # the payloads leave memory as soon as they are on their way
            payloads.pop(person, None)
            hashes.pop(person, None)
            refs.pop(person, None)
            prints.pop(person, None)

    def push(
        self,
        operation: str,
        people: list[str],
        hashes: dict[str, str],
        refs: dict[str, str | None],
        domains: dict[str, str],
        members: list[Member] | None = None,
        prints: dict[str, tuple[str, str, date]] | None = None,
    ) -> None:
        key = f"{self.run_id}:{operation}:{people[0]}"
        batch = _Batch(operation, key, people, hashes, domains, prints or {})
        audience = self.definition.audience

        def call() -> list[MemberResult]:
            if members is not None:
                return self.engine.upsert(audience, members, idempotency_key=batch.batch_key)
            return self.engine.remove(audience, people, idempotency_key=batch.batch_key)

        if self.pool is None:
            self._through(batch, refs, call)
            return
        self.inflight.append(self.pool.submit(self._through, batch, refs, call))
        while len(self.inflight) >= self.concurrency:
            self.inflight.popleft().result()

    def _through(
        self, batch: _Batch, refs: dict[str, str | None], call: Callable[[], list[MemberResult]]
    ) -> None:
        """One batch: its ledger rows committed, then the engine, then the acknowledgement."""
        with self.writing:
            self._ledger_pending(batch, refs)
        results = call()
        with self.writing:
            self._acknowledge(batch, results)

    def finish(self) -> None:
        error: BaseException | None = None
        while self.inflight:
            try:
                self.inflight.popleft().result()
            except EngineError as exc:  # settle the rest first: their acks are real
                error = error or exc
        self._close()
        if error is not None:
            raise error

    def abandon(self) -> None:
        """After a failure: let the batches in flight finish (what the engine took is
        acknowledged), leaving any that fail pending for the next run to settle."""
        for future in self.inflight:
            try:
                future.result()
            except Exception:  # stays pending; the next run settles it
                continue
        self.inflight.clear()
        self._close()

    def _close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.conn.close()

    def _ledger_pending(self, batch: _Batch, refs: dict[str, str | None]) -> None:
        d = self.definition
        with (
            self.conn.cursor() as cur,
            cur.copy(
                "copy activation.ledger (run_id, destination, audience, batch_key, operation,"
                " person_token, purpose, consent_ref, payload_hash) from stdin"
            ) as copy,
        ):
            for person in batch.people:
                copy.write_row(
                    (
                        self.run_id,
                        self.destination,
                        d.audience,
                        batch.batch_key,
                        batch.operation,
                        person,
                        d.purpose,
                        refs.get(person),
                        batch.hashes.get(person),
                    )
                )
        durable_commit(self.conn)  # the intent is on disk before anything leaves the building

    def _acknowledge(self, batch: _Batch, results: list[MemberResult]) -> None:
        if len(results) != len(batch.people):
            raise EngineError(f"{batch.operation}: the engine answered for a different batch")
        ok: list[str] = []
        rejected: list[str] = []
        codes: list[str] = []
        for person, member in zip(batch.people, results, strict=True):
            if member.status == "ok":
                ok.append(person)
            else:
                code = member.error_code or "ENGINE_REJECTED"
                rejected.append(person)
                codes.append(code)
                self.result.rejected += 1
                self.result.rejected_by_code[code] += 1
        conn, d = self.conn, self.definition
        with conn.transaction():
            if rejected:  # the few rejections row by row, with their codes
                conn.execute(
                    "update activation.ledger l set status = 'rejected', error_code = v.code,"
                    " acked_at = now() from unnest(%s::text[], %s::text[])"
                    "  as v(person_token, code)"
                    " where l.batch_key = %s and l.person_token = v.person_token"
                    "  and l.status = 'pending'",
                    (rejected, codes, batch.batch_key),
                )
                # Whatever the engine holds for them, their inputs are not vouched for: the
                # next run digests and retries them even if nothing changes meanwhile.
                conn.execute(
                    "update activation.sync_state set source_fingerprint = null"
                    " where destination = %s and audience = %s and person_token = any(%s)",
                    (self.destination, d.audience, rejected),
                )
            # Everyone else in the batch at once: one indexed statement, no per-row join.
            conn.execute(
                "update activation.ledger set status = 'acked', acked_at = now()"
                " where batch_key = %s and status = 'pending'",
                (batch.batch_key,),
            )
            if batch.operation == "remove":
                conn.execute(
                    "delete from activation.sync_state where destination = %s"
                    " and audience = %s and person_token = any(%s::text[])",
                    (self.destination, d.audience, array_literal(ok)),
                )
            elif ok:
                # The inputs the payload came from, so an unchanged member can be skipped
                # next time without decrypting or re-gating it (services/sync.py).
                prints = [batch.prints.get(p) for p in ok]
                conn.execute(
                    "insert into activation.sync_state (destination, audience, person_token,"
                    " payload_hash, source_fingerprint, consent_fingerprint,"
                    " consent_valid_until) select %s, %s, p, h, sf, cf, vu from"
                    " unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::date[])"
                    "  as t(p, h, sf, cf, vu)"
                    " on conflict (destination, audience, person_token) do update"
                    " set payload_hash = excluded.payload_hash,"
                    "  source_fingerprint = excluded.source_fingerprint,"
                    "  consent_fingerprint = excluded.consent_fingerprint,"
                    "  consent_valid_until = excluded.consent_valid_until, synced_at = now()",
                    (
                        self.destination,
                        d.audience,
                        array_literal(ok),
                        array_literal(batch.hashes[p] for p in ok),
                        array_literal(f[0] if f else None for f in prints),
                        array_literal(f[1] if f else None for f in prints),
                        array_literal(f[2] if f else None for f in prints),
                    ),
                )
                known = [p for p in ok if batch.domains.get(p)]
                # Only new or changed domains: ON CONFLICT locks (and so writes) every row
                # it meets, even one it leaves as it was, and most people's domain is known
                # from their other audiences. In token order: audiences syncing side by
                # side (services/sync.py) may hold the same person, and rows locked in one
                # order make one wait for the other instead of deadlocking.
                conn.execute(
                    "insert into activation.recipient_domains (person_token, domain)"
                    " select p, dm from unnest(%s::text[], %s::text[]) as t(p, dm)"
                    " where not exists (select 1 from activation.recipient_domains r"
                    "  where r.person_token = t.p and r.domain = t.dm) order by p"
                    " on conflict (person_token) do update set domain = excluded.domain,"
                    "  updated_at = now()"
                    " where activation.recipient_domains.domain <> excluded.domain",
                    (array_literal(known), array_literal(batch.domains[p] for p in known)),
                )
        counted = {"add": "added", "update": "updated", "remove": "removed"}[batch.operation]
        setattr(self.result, counted, getattr(self.result, counted) + len(ok))
        self.result.batches += 1


def recipient_domain(email: str) -> str:
    """The lower-cased domain of an address: the only part of it kept outside the vault."""
    return email.rpartition("@")[2].strip().lower()

"""Sync one audience to one engine destination: diff, gate, ledger, push, acknowledge.

Exactly once: ledger rows (with the batch's idempotency key) commit before a batch is
pushed and are acknowledged after, together with the sync state. A crash in between leaves
pending rows; the next run first re-pushes those batches with their original keys, which
the engine answers from its idempotency store instead of applying twice.

The consent gate runs here again at push time (beside the dbt audience mart), on the
consent events plus the live suppression list, so nobody is pushed without a valid
authorization for the audience's purpose on the send day.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import psycopg

from connectors.email.base import EmailEngine, Member
from connectors.warehouse.audit import record_audit
from domain.consent import ConsentDecision, ConsentEvent, consent_state_on
from domain.sync_diff import diff_membership, payload_hash
from domain.vault_cipher import VaultCipher
from services.vault_reader import read_contacts

BATCH_SIZE = 500
CONTACT_COLUMN = "email"


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
    excluded_by_reason: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def excluded(self) -> int:
        return sum(self.excluded_by_reason.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "destination": self.destination,
            "audience": self.audience,
            "purpose": self.purpose,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "excluded": self.excluded,
            "excluded_by_reason": dict(self.excluded_by_reason),
            "rejected": self.rejected,
            "resumed": self.resumed,
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


def consent_events_for(
    conn: psycopg.Connection, person_tokens: Sequence[str]
) -> dict[str, list[ConsentEvent]]:
    """Consent events per person: the modelled ones plus suppressions received since."""
    rows = conn.execute(
        "select person_token, purpose, event_type, effective_on, expires_on, source_ref"
        " from intermediate.int_consent_events where person_token = any(%s)"
        " union all"
        " select person_token, null, event_type, effective_at::date, null, event_id"
        " from engagement.suppressions where person_token = any(%s)",
        (list(person_tokens), list(person_tokens)),
    )
    events: dict[str, list[ConsentEvent]] = defaultdict(list)
    for person, purpose, event_type, effective_on, expires_on, source_ref in rows:
        events[person].append(
            ConsentEvent(event_type, effective_on, purpose, expires_on, source_ref)
        )
    return events


def gate(
    conn: psycopg.Connection, person_tokens: Sequence[str], purpose: str, day: date
) -> dict[str, ConsentDecision]:
    events = consent_events_for(conn, person_tokens)
    return {p: consent_state_on(events.get(p, []), purpose, day) for p in person_tokens}


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
) -> SyncResult:
    started = time.monotonic()
    day = day or datetime.now(UTC).date()
    definition = audience_definition(conn, audience)
    run_id = f"sync-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    result = SyncResult(run_id, destination, audience, definition.purpose, mode, dry_run)
    conn.execute(
        "insert into activation.sync_runs (run_id, destination, audience, purpose, mode,"
        " dry_run, evaluated_on) values (%s, %s, %s, %s, %s, %s, %s)",
        (run_id, destination, audience, definition.purpose, mode, dry_run, day),
    )
    conn.commit()
    if not dry_run:
        engine.ensure_audience(audience, audience, definition.purpose)
        result.resumed, forced_removes = _resume_pending(conn, definition, destination, day)
    else:
        forced_removes = []

    members = [
        person
        for (person,) in conn.execute(
            "select person_token from marts.audience_membership where audience = %s"
            " order by person_token",
            (audience,),
        )
    ]
    decisions = gate(conn, members, definition.purpose, day)
    allowed = [p for p in members if decisions[p].allowed]
    for person in members:
        if not decisions[person].allowed:
            result.excluded_by_reason[decisions[person].reason] += 1

    columns = [CONTACT_COLUMN, *definition.personalization_fields]
    contacts = read_contacts(conn, cipher, allowed, columns, definition.purpose, f"sync {audience}")
    payloads: dict[str, dict[str, object]] = {}
    for person in allowed:
        contact = contacts.get(person, {})
        if not contact.get(CONTACT_COLUMN):
            result.excluded_by_reason["no_email"] += 1
            continue
        payloads[person] = {
            "email": contact[CONTACT_COLUMN],
            "fields": {f: contact.get(f) for f in definition.personalization_fields},
        }
    wanted = {person: payload_hash(payload) for person, payload in payloads.items()}
    synced = dict(
        conn.execute(
            "select person_token, payload_hash from activation.sync_state"
            " where destination = %s and audience = %s",
            (destination, audience),
        ).fetchall()
    )
    diff = diff_membership(wanted, synced, mode)
    # People a crashed run may have pushed but who lost consent since: remove them too.
    diff.removes = sorted(set(diff.removes) | (set(forced_removes) - set(wanted)))
    if dry_run:
        result.added, result.updated, result.removed = (
            len(diff.adds),
            len(diff.updates),
            len(diff.removes),
        )
    else:
        consent_refs = {p: decisions[p].source_ref for p in allowed}
        for operation, people in (("add", diff.adds), ("update", diff.updates)):
            for start in range(0, len(people), batch_size):
                batch = people[start : start + batch_size]
                _push_upserts(
                    conn,
                    engine,
                    run_id,
                    definition,
                    destination,
                    operation,
                    batch,
                    payloads,
                    wanted,
                    consent_refs,
                    result,
                )
        for start in range(0, len(diff.removes), batch_size):
            _push_removes(
                conn,
                engine,
                run_id,
                definition,
                destination,
                diff.removes[start : start + batch_size],
                result,
            )
    result.seconds = time.monotonic() - started
    conn.execute(
        "update activation.sync_runs set finished_at = now(), status = 'succeeded',"
        " added = %s, updated = %s, removed = %s, excluded = %s, rejected = %s"
        " where run_id = %s",
        (result.added, result.updated, result.removed, result.excluded, result.rejected, run_id),
    )
    record_audit(
        conn,
        "sync_dry_run" if dry_run else "sync",
        f"{destination}/{audience}",
        result.added + result.updated + result.removed,
        purpose=definition.purpose,
        role="hub_sender",
    )
    conn.commit()
    return result


def _ledger_pending(
    conn: psycopg.Connection,
    run_id: str,
    definition: AudienceDefinition,
    destination: str,
    batch_key: str,
    operation: str,
    people: list[str],
    hashes: dict[str, str],
    consent_refs: dict[str, str | None],
) -> None:
    with (
        conn.cursor() as cur,
        cur.copy(
            "copy activation.ledger (run_id, destination, audience, batch_key, operation,"
            " person_token, purpose, consent_ref, payload_hash) from stdin"
        ) as copy,
    ):
        for person in people:
            copy.write_row(
                (
                    run_id,
                    destination,
                    definition.audience,
                    batch_key,
                    operation,
                    person,
                    definition.purpose,
                    consent_refs.get(person),
                    hashes.get(person),
                )
            )
    conn.commit()  # the intent is durable before anything leaves the building


def _acknowledge(
    conn: psycopg.Connection,
    destination: str,
    audience: str,
    batch_key: str,
    operation: str,
    results: list,
    hashes: dict[str, str],
    result: SyncResult,
) -> None:
    with conn.transaction():
        for member in results:
            person = member.external_id
            if member.status == "ok":
                if operation == "remove":
                    conn.execute(
                        "delete from activation.sync_state where destination = %s"
                        " and audience = %s and person_token = %s",
                        (destination, audience, person),
                    )
                else:
                    conn.execute(
                        "insert into activation.sync_state (destination, audience,"
                        " person_token, payload_hash) values (%s, %s, %s, %s)"
                        " on conflict (destination, audience, person_token) do update"
                        " set payload_hash = excluded.payload_hash, synced_at = now()",
                        (destination, audience, person, hashes.get(person)),
                    )
                status, code = "acked", None
            else:
                status, code = "rejected", member.error_code or "ENGINE_REJECTED"
                result.rejected += 1
            conn.execute(
                "update activation.ledger set status = %s, error_code = %s, acked_at = now()"
                " where batch_key = %s and person_token = %s and status = 'pending'",
                (status, code, batch_key, person),
            )
        if operation == "add":
            result.added += sum(1 for m in results if m.status == "ok")
        elif operation == "update":
            result.updated += sum(1 for m in results if m.status == "ok")
        else:
            result.removed += sum(1 for m in results if m.status == "ok")


def _push_upserts(
    conn,
    engine,
    run_id,
    definition,
    destination,
    operation,
    batch,
    payloads,
    hashes,
    consent_refs,
    result,
) -> None:
    batch_key = f"{run_id}:{operation}:{batch[0]}"
    _ledger_pending(
        conn, run_id, definition, destination, batch_key, operation, batch, hashes, consent_refs
    )
    members = [
        Member(external_id=p, email=payloads[p]["email"], fields=payloads[p]["fields"])
        for p in batch
    ]
    results = engine.upsert(definition.audience, members, idempotency_key=batch_key)
    _acknowledge(
        conn, destination, definition.audience, batch_key, operation, results, hashes, result
    )


def _push_removes(conn, engine, run_id, definition, destination, batch, result) -> None:
    batch_key = f"{run_id}:remove:{batch[0]}"
    _ledger_pending(conn, run_id, definition, destination, batch_key, "remove", batch, {}, {})
    results = engine.remove(definition.audience, batch, idempotency_key=batch_key)
    _acknowledge(conn, destination, definition.audience, batch_key, "remove", results, {}, result)


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
    pending = conn.execute(
        "select distinct person_token, operation from activation.ledger"
        " where destination = %s and audience = %s and status = 'pending'",
        (destination, definition.audience),
    ).fetchall()
    if not pending:
        return 0, []
    upserted = sorted({p for p, operation in pending if operation != "remove"})
    decisions = gate(conn, upserted, definition.purpose, day)
    to_remove = [p for p in upserted if not decisions[p].allowed]
    settled = conn.execute(
        "update activation.ledger set status = 'superseded', acked_at = now()"
        " where destination = %s and audience = %s and status = 'pending'",
        (destination, definition.audience),
    ).rowcount
    conn.commit()
    return settled, to_remove

"""Read engagement events back from an engine into engagement.* (exactly once, by cursor).

Each page of events and the cursor after it commit in one transaction, and events insert
idempotently by event id, so a crash or a re-delivered page never double-counts.
Unsubscribes, complaints and hard bounces also land in engagement.suppressions, which the
send-time consent gate reads directly: they take effect before the next sync.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import psycopg

from connectors.warehouse.audit import record_audit

PAGE_SIZE = 1000
SUPPRESSING = {"unsubscribe": "unsubscribe", "complaint": "complaint"}


@dataclass
class FeedbackResult:
    destination: str
    read: int = 0
    new: int = 0
    by_type: Counter = field(default_factory=Counter)
    suppressions: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "destination": self.destination,
            "read": self.read,
            "new": self.new,
            "by_type": dict(self.by_type),
            "suppressions": self.suppressions,
        }


def suppression_type(event_type: str, bounce_type: str | None) -> str | None:
    if event_type == "bounce":
        return "hard_bounce" if bounce_type == "hard" else None
    return SUPPRESSING.get(event_type)


def read_feedback(conn: psycopg.Connection, engine, destination: str) -> FeedbackResult:
    result = FeedbackResult(destination)
    row = conn.execute(
        "select cursor from engagement.cursors where destination = %s", (destination,)
    ).fetchone()
    cursor = row[0] if row else None
    while True:
        page = engine.events(cursor, PAGE_SIZE)
        if not page.events and page.next_cursor == cursor:
            break
        with conn.transaction():
            for event in page.events:
                result.read += 1
                inserted = conn.execute(
                    "insert into engagement.events (event_id, destination, audience,"
                    " person_token, event_type, occurred_at, machine_open, bounce_type)"
                    " values (%s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing",
                    (
                        event.event_id,
                        destination,
                        event.audience_id,
                        event.external_id,
                        event.type,
                        event.occurred_at,
                        bool(event.machine_open),
                        event.bounce_type,
                    ),
                ).rowcount
                if not inserted:
                    continue
                result.new += 1
                result.by_type[event.type] += 1
                kind = suppression_type(event.type, event.bounce_type)
                if kind and event.external_id:
                    conn.execute(
                        "insert into engagement.suppressions (event_id, destination,"
                        " person_token, event_type, effective_at) values (%s, %s, %s, %s, %s)"
                        " on conflict do nothing",
                        (event.event_id, destination, event.external_id, kind, event.occurred_at),
                    )
                    result.suppressions += 1
            conn.execute(
                "insert into engagement.cursors (destination, cursor) values (%s, %s)"
                " on conflict (destination) do update set cursor = excluded.cursor,"
                " updated_at = now()",
                (destination, page.next_cursor),
            )
        if not page.events:
            break
        cursor = page.next_cursor
    with conn.transaction():
        record_audit(conn, "read_feedback", f"{destination}/events", result.new)
    return result

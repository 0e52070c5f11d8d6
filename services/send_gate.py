"""The send-time consent gate: consent events per person, judged by domain/consent.py.

The events are the modelled ones (intermediate.int_consent_events, built by dbt) plus the
live suppression list (engagement.suppressions), so engine feedback - unsubscribes,
complaints, hard bounces - takes effect before dbt runs again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta

import orjson
import psycopg

from domain.consent import ConsentDecision, ConsentEvent, consent_state_on

# Consent events the send-time gate reads: the modelled ones plus suppressions received
# since dbt last ran (engine feedback takes effect before the next dbt build).
CONSENT_SOURCES = (
    "select person_token, purpose, event_type, effective_on, expires_on, source_ref"
    " from intermediate.int_consent_events"
    " union all"
    " select person_token, null, event_type, effective_at::date, null, event_id"
    " from engagement.suppressions"
)


def consent_events_for(
    conn: psycopg.Connection, person_tokens: Sequence[str]
) -> dict[str, list[ConsentEvent]]:
    """Consent events per person: the modelled ones plus suppressions received since."""
    rows = conn.execute(
        f"select * from ({CONSENT_SOURCES}) e where person_token = any(%s)",
        (list(person_tokens),),
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


def events_from_json(events_json: str) -> list[ConsentEvent]:
    """Consent events aggregated by the streaming query (json_agg of arrays)."""
    return [
        ConsentEvent(
            event_type,
            date.fromisoformat(effective_on),
            purpose,
            date.fromisoformat(expires_on) if expires_on else None,
            source_ref,
        )
        for event_type, effective_on, purpose, expires_on, source_ref in orjson.loads(events_json)
    ]


def stable_until(events: list[ConsentEvent], day: date) -> date:
    """The last day through which consent_state_on(events, purpose, d) equals its answer for
    `day`, for every purpose: until the next event becomes effective, or the next
    authorization expires. A decision cached with this date needs the same events to hold.
    """
    limit = date.max
    for event in events:
        if event.effective_on > day:
            limit = min(limit, event.effective_on - timedelta(days=1))
        if event.expires_on is not None and event.expires_on >= day:
            limit = min(limit, event.expires_on)
    return limit

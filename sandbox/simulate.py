"""SANDBOX campaign simulation: the engagement events one added member produces.

Everything is derived from a RNG keyed by (seed, audience_id, external_id), so the same
member in the same audience under the same seed always yields the same events (ids, types,
flags, URLs and time offsets); only the send time comes from the engine's clock. Events name
the member by `external_id` only and never carry the email address.

Rates are loosely realistic so downstream engagement models see every event kind:
hard bounces replace delivery, soft bounces delay it, machine opens (privacy-proxy
prefetches) arrive seconds after delivery, human opens and clicks later, complaints and
unsubscribes are rare.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from typing import NamedTuple

EVENT_TYPES = ("sent", "delivered", "open", "click", "bounce", "complaint", "unsubscribe")

P_HARD_BOUNCE = 0.03
P_SOFT_BOUNCE = 0.04
P_MACHINE_OPEN = 0.25
P_HUMAN_OPEN = 0.35
P_CLICK_GIVEN_OPEN = 0.40
P_UNSUBSCRIBE = 0.012
P_COMPLAINT = 0.004

# `.invalid` is reserved (RFC 2606): these links can never resolve to a real site.
CLICK_URLS = (
    "https://sandbox.audience-hub.invalid/newsletter",
    "https://sandbox.audience-hub.invalid/events",
    "https://sandbox.audience-hub.invalid/preferences",
)


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One simulated engagement event, as stored and as served by `GET /v1/events`."""

    event_id: str
    type: str
    external_id: str
    audience_id: str
    occurred_at: str  # ISO 8601 UTC with a trailing Z
    machine_open: bool = False
    bounce_type: str | None = None
    url: str | None = None


class _Raw(NamedTuple):
    when: dt.datetime
    kind: str
    machine_open: bool = False
    bounce_type: str | None = None
    url: str | None = None


def simulate_send(
    seed: int, audience_id: str, external_id: str, sent_at: dt.datetime
) -> list[SimEvent]:
    """The events of one campaign send to a newly added member, in time order."""
    key = f"{seed}\x1f{audience_id}\x1f{external_id}"
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big"))
    raw: list[_Raw] = []

    def at(base: dt.datetime, lo: float, hi: float) -> dt.datetime:
        return base + dt.timedelta(seconds=rng.uniform(lo, hi))

    sent = at(sent_at, 0, 60)  # campaign fan-out spreads sends over a minute
    raw.append(_Raw(sent, "sent"))
    if rng.random() < P_HARD_BOUNCE:
        raw.append(_Raw(at(sent, 1, 30), "bounce", bounce_type="hard"))
        return _finish(raw, sent_at, seed, audience_id, external_id)
    delivered = at(sent, 1, 30)
    if rng.random() < P_SOFT_BOUNCE:
        raw.append(_Raw(delivered, "bounce", bounce_type="soft"))
        delivered = at(delivered, 300, 1800)  # the retry got through later
    raw.append(_Raw(delivered, "delivered"))

    last = delivered
    if rng.random() < P_MACHINE_OPEN:
        raw.append(_Raw(at(delivered, 1, 120), "open", machine_open=True))
    if rng.random() < P_HUMAN_OPEN:
        first_open = at(delivered, 120, 36 * 3600)
        opens = [first_open]
        for _ in range(rng.randint(0, 2)):
            opens.append(at(opens[-1], 60, 24 * 3600))
        raw.extend(_Raw(t, "open") for t in opens)
        last = opens[-1]
        if rng.random() < P_CLICK_GIVEN_OPEN:
            click = at(first_open, 5, 600)
            for _ in range(rng.randint(1, 2)):
                raw.append(_Raw(click, "click", url=rng.choice(CLICK_URLS)))
                click = at(click, 5, 600)
    if rng.random() < P_UNSUBSCRIBE:
        raw.append(_Raw(at(last, 10, 3600), "unsubscribe"))
    if rng.random() < P_COMPLAINT:
        raw.append(_Raw(at(delivered, 600, 48 * 3600), "complaint"))
    return _finish(raw, sent_at, seed, audience_id, external_id)


def _finish(
    raw: list[_Raw],
    sent_at: dt.datetime,
    seed: int,
    audience_id: str,
    external_id: str,
) -> list[SimEvent]:
    raw.sort(key=lambda item: item.when)  # stable: equal times keep generation order
    # The simulated campaign is placed so that it has already played out when the member is
    # added: no event is dated in the future, so consumers can treat event times as facts
    # (an unsubscribe is effective at once, never "from tomorrow").
    shift = max(raw[-1].when - sent_at, dt.timedelta(0))
    raw = [item._replace(when=item.when - shift) for item in raw]
    events = []
    for index, item in enumerate(raw):
        ident = hashlib.sha256(f"{seed}\x1f{audience_id}\x1f{external_id}\x1f{index}".encode())
        events.append(
            SimEvent(
                event_id=f"evt_{ident.hexdigest()[:24]}",
                type=item.kind,
                external_id=external_id,
                audience_id=audience_id,
                occurred_at=iso_utc(item.when),
                machine_open=item.machine_open,
                bounce_type=item.bounce_type,
                url=item.url,
            )
        )
    return events


def iso_utc(when: dt.datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a Z suffix."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

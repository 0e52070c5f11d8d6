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
import struct
import time
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


class SimEvent(NamedTuple):
    """One simulated engagement event, as stored and as served by `GET /v1/events`.

    A named tuple, not a frozen dataclass: a first sync of a million members creates over
    three million of them, and the tuple is also the row the store inserts as it is.
    """

    event_id: str
    type: str
    external_id: str
    audience_id: str
    occurred_at: str  # ISO 8601 UTC with a trailing Z
    machine_open: bool = False
    bounce_type: str | None = None
    url: str | None = None


def simulate_send(
    seed: int, audience_id: str, external_id: str, sent_at: dt.datetime
) -> list[SimEvent]:
    """The events of one campaign send to a newly added member, in time order.

    Times are kept as seconds after the send while the campaign plays out (no datetime
    arithmetic per event) and formatted once at the end: the sandbox simulates a million
    sends in well under a minute.
    """
    key = f"{seed}\x1f{audience_id}\x1f{external_id}".encode()
    digest = hashlib.sha256(key).digest()
    rng = _Draws(digest)
    uniform, chance = rng.uniform, rng.random
    # (seconds after sent_at, kind, machine_open, bounce_type, url)
    raw: list[tuple[float, str, bool, str | None, str | None]] = []
    sent = uniform(0, 60)  # campaign fan-out spreads sends over a minute
    raw.append((sent, "sent", False, None, None))
    if chance() < P_HARD_BOUNCE:
        raw.append((sent + uniform(1, 30), "bounce", False, "hard", None))
        return _finish(raw, sent_at, digest, audience_id, external_id)
    delivered = sent + uniform(1, 30)
    if chance() < P_SOFT_BOUNCE:
        raw.append((delivered, "bounce", False, "soft", None))
        delivered += uniform(300, 1800)  # the retry got through later
    raw.append((delivered, "delivered", False, None, None))

    last = delivered
    if chance() < P_MACHINE_OPEN:
        raw.append((delivered + uniform(1, 120), "open", True, None, None))
    if chance() < P_HUMAN_OPEN:
        first_open = delivered + uniform(120, 36 * 3600)
        opens = [first_open]
        for _ in range(rng.randint(0, 2)):
            opens.append(opens[-1] + uniform(60, 24 * 3600))
        raw.extend((t, "open", False, None, None) for t in opens)
        last = opens[-1]
        if chance() < P_CLICK_GIVEN_OPEN:
            click = first_open + uniform(5, 600)
            for _ in range(rng.randint(1, 2)):
                raw.append((click, "click", False, None, rng.choice(CLICK_URLS)))
                click += uniform(5, 600)
    if chance() < P_UNSUBSCRIBE:
        raw.append((last + uniform(10, 3600), "unsubscribe", False, None, None))
    if chance() < P_COMPLAINT:
        raw.append((delivered + uniform(600, 48 * 3600), "complaint", False, None, None))
    return _finish(raw, sent_at, digest, audience_id, external_id)


class _Draws:
    """Deterministic uniform draws from a member's digest (a keyed stream of BLAKE2b
    blocks): a fraction of the cost of seeding a Mersenne Twister per member."""

    __slots__ = ("_block", "_digest", "_left")

    def __init__(self, digest: bytes) -> None:
        self._digest, self._block = digest, 0
        self._left: list[int] = []

    def random(self) -> float:
        if not self._left:
            block = hashlib.blake2b(
                self._digest, digest_size=64, person=self._block.to_bytes(16, "big")
            ).digest()
            self._left = list(struct.unpack(">16I", block))
            self._block += 1
        return self._left.pop() / 4294967296.0

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def randint(self, lo: int, hi: int) -> int:
        return lo + int(self.random() * (hi - lo + 1))

    def choice(self, options: tuple[str, ...]) -> str:
        return options[int(self.random() * len(options))]


def _finish(
    raw: list[tuple[float, str, bool, str | None, str | None]],
    sent_at: dt.datetime,
    digest: bytes,
    audience_id: str,
    external_id: str,
) -> list[SimEvent]:
    raw.sort(key=lambda item: item[0])  # stable: equal times keep generation order
    # The simulated campaign is placed so that it has already played out when the member is
    # added: no event is dated in the future, so consumers can treat event times as facts
    # (an unsubscribe is effective at once, never "from tomorrow").
    base = sent_at.timestamp() - max(raw[-1][0], 0.0)
    prefix = "evt_" + digest[8:18].hex()
    # Positional: keywords cost a named tuple more, 3M times in a sync of 1M members.
    return [
        SimEvent(
            f"{prefix}{index:04x}",
            kind,
            external_id,
            audience_id,
            _iso_seconds(base + offset),
            machine,
            bounce,
            url,
        )
        for index, (offset, kind, machine, bounce, url) in enumerate(raw)
    ]


_DAY_PREFIXES: dict[int, str] = {}  # days since the epoch -> "YYYY-MM-DDT"


def _iso_seconds(seconds: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds; the date part is formatted
    once per day (a send's events span a few days), the time of day from small tables."""
    millis = round(seconds * 1000)
    whole, ms = divmod(millis, 1000)
    day, second = divmod(whole, 86400)
    prefix = _DAY_PREFIXES.get(day)
    if prefix is None:
        if len(_DAY_PREFIXES) > 10_000:  # a long-running engine: keep the cache small
            _DAY_PREFIXES.clear()
        prefix = _DAY_PREFIXES[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
    minute, second = divmod(second, 60)
    return f"{prefix}{_HOUR_MINUTE[minute]}{_SECOND[second]}{_MILLIS[ms]}"


# The parts of a time of day, made once and looked up rather than formatted for each of the
# 3M events of a large sync: "HH:MM" for every minute of the day, ":SS", and ".mmmZ".
_HOUR_MINUTE = [f"{m // 60:02d}:{m % 60:02d}" for m in range(1440)]
_SECOND = [f":{s:02d}" for s in range(60)]
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]


def iso_utc(when: dt.datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a Z suffix."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

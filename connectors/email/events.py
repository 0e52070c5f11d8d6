"""Event readers: engine event shapes mapped onto EngineEvent, keyed by person token.

Accepted shapes (docs/engine-events.md):
- the hub/sandbox shape of docs/engine-api.md (`GET /v1/events`, sandbox webhooks);
- SendGrid-style event webhook batches (a JSON array; `sg_event_id`, `sg_machine_open`,
  the person token in the custom argument `external_id`);
- Amazon SES event records (`eventType`, or `notificationType` for the older feedback
  notifications), delivered as SNS notifications (`Message` holds the record as a string)
  or as Firehose NDJSON; the person token rides in the message tag `external_id`.

Events are never keyed on email: an event without an external id is counted as unmapped and
dropped. Addresses present in vendor payloads (SendGrid `email`, SES `destination`,
`bouncedRecipients`) are never read into an EngineEvent. Machine opens (privacy proxies,
link scanners) are flagged, never counted as human opens.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from connectors.email.base import EngineEvent

# User agents of image proxies and security scanners that fetch every pixel and link on
# delivery; their opens say nothing about a human reading the message.
_MACHINE_AGENTS = re.compile(
    r"GoogleImageProxy|YahooMailProxy|ggpht\.com|Barracuda|Mimecast|Proofpoint|"
    r"Symantec|MessageLabs|Trend ?Micro|Cisco ?IronPort|bot|crawler|spider|"
    r"python-requests|curl/",
    re.IGNORECASE,
)
# Apple Mail Privacy Protection prefetches with a bare, version-less agent.
_BARE_AGENTS = {"mozilla/5.0", ""}


def looks_like_machine_open(user_agent: str | None) -> bool:
    """Whether an open (pixel fetch) came from a proxy or scanner rather than a person."""
    agent = (user_agent or "").strip()
    return agent.lower() in _BARE_AGENTS or bool(_MACHINE_AGENTS.search(agent))


@dataclass
class ParsedEvents:
    """Events mapped to person tokens, and how many could not be (no external id)."""

    events: list[EngineEvent] = field(default_factory=list)
    unmapped: int = 0
    skipped: int = 0  # records of a kind the hub does not track (e.g. SES Rendering Failure)

    def extend(self, other: ParsedEvents) -> None:
        self.events.extend(other.events)
        self.unmapped += other.unmapped
        self.skipped += other.skipped


# One event as services.feedback writes it (COPY column order): event id, audience id or
# None, person token, event type, occurred_at (ISO 8601 text with an offset: PostgreSQL
# parses it), machine open, bounce type. Plain tuples: bulk readback maps tens of thousands
# of events per page and a tuple of strings is the cheapest thing to build and to COPY.
EventRow = tuple[str, str | None, str, str, str, bool, str | None]
# The same fields as columns (readers that map in bulk hand over a frame, not rows).
EVENT_COLUMNS = {
    "event_id": pl.String,
    "audience": pl.String,
    "person_token": pl.String,
    "event_type": pl.String,
    "occurred_at": pl.String,
    "machine_open": pl.Boolean,
    "bounce_type": pl.String,
}
# Events as rows or as a frame of EVENT_COLUMNS: services.feedback writes either.
EventBatch = list[EventRow] | pl.DataFrame


def event_frame(batches: Iterable[EventBatch]) -> pl.DataFrame:
    """Batches of events, in order, as one frame of EVENT_COLUMNS."""
    frames = [
        batch if isinstance(batch, pl.DataFrame) else
        pl.DataFrame(batch, schema=EVENT_COLUMNS, orient="row")
        for batch in batches
        if len(batch)
    ]  # fmt: skip
    return pl.concat(frames) if frames else pl.DataFrame(schema=EVENT_COLUMNS)


def event_rows_of(batch: EventBatch) -> list[EventRow]:
    """A batch as rows."""
    return batch.rows() if isinstance(batch, pl.DataFrame) else batch  # type: ignore[return-value]


@dataclass(slots=True)
class RowPage:
    """A page of events as rows, and the cursor after it (engines offering `event_rows`)."""

    rows: EventBatch
    next_cursor: str
    read: int  # events on the page, mapped or not
    unmapped: int = 0  # of those, events without an external id (dropped, never keyed on email)


def event_row(event: EngineEvent) -> EventRow:
    """An EngineEvent as a row (adapters that only offer `events`)."""
    return (
        event.event_id,
        event.audience_id or None,
        event.external_id,
        event.type,
        event.occurred_at.isoformat(),  # aware (EngineEvent's contract): keeps its offset
        bool(event.machine_open),
        event.bounce_type,
    )


class EventShapeError(ValueError):
    """The payload is not a batch of events in any accepted shape (names no values)."""


# --- hub / sandbox ------------------------------------------------------------------------


def hub_event(row: Any) -> EngineEvent:
    """One event of docs/engine-api.md (GET /v1/events, sandbox webhooks)."""
    try:
        occurred = _aware(dt.datetime.fromisoformat(row["occurred_at"]))
        bounce = row.get("bounce_type")
        if bounce not in (None, "hard", "soft"):
            raise ValueError("bounce_type")
        url = row.get("url")
        return EngineEvent(
            event_id=str(row["event_id"]),
            type=str(row["type"]),
            external_id=str(row["external_id"]),
            audience_id=str(row.get("audience_id") or ""),
            occurred_at=occurred,
            machine_open=bool(row.get("machine_open", False)),
            bounce_type=bounce,
            url=url if isinstance(url, str) else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise EventShapeError("an event does not follow the engine API event shape") from None


def hub_batch(body: bytes | Any) -> ParsedEvents:
    """`{"events": [...]}` (a sandbox webhook delivery) or a bare list of hub events."""
    data = load_json(body)
    rows = data.get("events") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise EventShapeError("expected an object with an 'events' list")
    parsed = ParsedEvents()
    for row in rows:
        if isinstance(row, dict) and not row.get("external_id"):
            parsed.unmapped += 1
            continue
        parsed.events.append(hub_event(row))
    return parsed


# --- SendGrid-style event webhook --------------------------------------------------------

SENDGRID_TYPES = {
    "processed": "sent",
    "delivered": "delivered",
    "open": "open",
    "click": "click",
    "bounce": "bounce",
    "blocked": "bounce",
    "deferred": "deferred",
    "dropped": "dropped",
    "spamreport": "complaint",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
    "group_resubscribe": "resubscribe",
}


def sendgrid_batch(body: bytes | Any) -> ParsedEvents:
    """A SendGrid event webhook POST body: a JSON array of event objects."""
    rows = load_json(body)
    if not isinstance(rows, list):
        raise EventShapeError("a SendGrid event webhook body is a JSON array")
    parsed = ParsedEvents()
    for row in rows:
        if not isinstance(row, dict) or "event" not in row or "timestamp" not in row:
            raise EventShapeError("a SendGrid event lacks 'event' or 'timestamp'")
        kind = SENDGRID_TYPES.get(str(row["event"]))
        if kind is None:
            parsed.skipped += 1
            continue
        external_id = row.get("external_id")
        if not isinstance(external_id, str) or not external_id:
            parsed.unmapped += 1
            continue
        bounce = None
        if kind == "bounce":
            # SendGrid: event 'bounce' is a permanent failure, 'blocked' a temporary one;
            # newer payloads also say so in `type` (bounce | blocked).
            hard = row["event"] == "bounce" and row.get("type", "bounce") == "bounce"
            bounce = "hard" if hard else "soft"
        try:
            occurred = dt.datetime.fromtimestamp(int(row["timestamp"]), dt.UTC)
        except (TypeError, ValueError, OverflowError):
            raise EventShapeError("a SendGrid event has a bad timestamp") from None
        event_id = row.get("sg_event_id") or _derived_id("sendgrid", row, external_id, kind)
        parsed.events.append(
            EngineEvent(
                event_id=f"sg:{event_id}",
                type=kind,
                external_id=external_id,
                audience_id=str(row.get("audience_id") or row.get("marketing_campaign_id") or ""),
                occurred_at=occurred,
                machine_open=kind == "open" and bool(row.get("sg_machine_open", False)),
                bounce_type=bounce,
                url=row.get("url") if kind == "click" and isinstance(row.get("url"), str) else None,
            )
        )
    return parsed


# --- Amazon SES -----------------------------------------------------------------------------

SES_TYPES = {
    "send": "sent",
    "delivery": "delivered",
    "open": "open",
    "click": "click",
    "bounce": "bounce",
    "complaint": "complaint",
    "subscription": "unsubscribe",
    "deliverydelay": "deferred",
    "reject": "dropped",
}


def ses_record(record: Any) -> ParsedEvents:
    """One SES event record (event publishing) or feedback notification."""
    if not isinstance(record, dict):
        raise EventShapeError("an SES record is a JSON object")
    raw_type = record.get("eventType") or record.get("notificationType")
    mail = record.get("mail")
    if not isinstance(raw_type, str) or not isinstance(mail, dict):
        raise EventShapeError("an SES record lacks eventType/notificationType or mail")
    parsed = ParsedEvents()
    key = raw_type.replace(" ", "").lower()
    kind = SES_TYPES.get(key)
    detail = record.get(_detail_key(key)) or {}
    if kind is None or not isinstance(detail, dict):
        parsed.skipped += 1
        return parsed
    tags = mail.get("tags") if isinstance(mail.get("tags"), dict) else {}
    external_id = _first(tags.get("external_id"))
    if not external_id:
        parsed.unmapped += 1
        return parsed
    bounce = None
    if kind == "bounce":
        bounce = "hard" if detail.get("bounceType") == "Permanent" else "soft"
    if kind == "unsubscribe" and not _ses_unsubscribed(detail):
        parsed.skipped += 1  # a preference change that keeps the person subscribed
        return parsed
    when = detail.get("timestamp") or mail.get("timestamp")
    try:
        occurred = _aware(dt.datetime.fromisoformat(str(when).replace("Z", "+00:00")))
    except ValueError:
        raise EventShapeError("an SES record has a bad timestamp") from None
    link = detail.get("link") if kind == "click" else None
    identity = "|".join(
        [str(mail.get("messageId")), key, str(when), str(link or ""), str(bounce or "")]
    )
    parsed.events.append(
        EngineEvent(
            event_id="ses:" + hashlib.sha256(identity.encode()).hexdigest()[:32],
            type=kind,
            external_id=external_id,
            audience_id=_first(tags.get("audience_id")) or "",
            occurred_at=occurred,
            machine_open=kind == "open" and looks_like_machine_open(detail.get("userAgent")),
            bounce_type=bounce,
            url=link if isinstance(link, str) else None,
        )
    )
    return parsed


def ses_sns_notification(body: bytes | Any) -> ParsedEvents:
    """An SNS HTTP(S) delivery whose Message is an SES record (as a JSON string)."""
    envelope = load_json(body)
    if not isinstance(envelope, dict) or envelope.get("Type") != "Notification":
        raise EventShapeError("not an SNS Notification")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise EventShapeError("the SNS Notification has no Message string")
    return ses_record(load_json(message.encode()))


def ses_firehose_lines(lines: Iterable[bytes | str]) -> Iterator[ParsedEvents]:
    """SES records as Firehose writes them: one JSON record per line (blank lines skipped)."""
    for line in lines:
        text = line.strip()
        if text:
            yield ses_record(load_json(text if isinstance(text, bytes) else text.encode()))


# --- helpers --------------------------------------------------------------------------------


def _detail_key(key: str) -> str:
    return {"deliverydelay": "deliveryDelay"}.get(key, key)


def _ses_unsubscribed(detail: dict[str, Any]) -> bool:
    prefs = detail.get("newTopicPreferences") or {}
    if prefs.get("unsubscribeAll"):
        return True
    topics = prefs.get("topicSubscriptionStatus") or []
    return any(isinstance(t, dict) and t.get("subscriptionStatus") == "OptOut" for t in topics)


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def _derived_id(source: str, row: dict[str, Any], external_id: str, kind: str) -> str:
    identity = f"{source}|{external_id}|{kind}|{row.get('timestamp')}|{row.get('url', '')}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _aware(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("naive timestamp")
    return when.astimezone(dt.UTC)


def load_json(body: bytes | Any) -> Any:
    """Parse a JSON body (passing already-parsed values through); EventShapeError if not."""
    if not isinstance(body, bytes | bytearray | memoryview | str):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EventShapeError("the body is not valid JSON") from None

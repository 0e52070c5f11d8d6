"""Delivery status notifications (RFC 3464): which message bounced, and how hard.

A DSN is a `multipart/report; report-type=delivery-status` message: a human-readable part,
a `message/delivery-status` part (per-recipient `Action` and `Status`), and the original
message or its headers (`message/rfc822` / `text/rfc822-headers`). Status 5.x.x with
Action `failed` is a hard bounce; 4.x.x (or Action `delayed`) a soft one.

Only the original's Message-ID and the hub's opaque `X-Hub-Ref` are read; the recipient
address in `Final-Recipient` is never returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")


@dataclass(frozen=True, slots=True)
class Bounce:
    message_id: str | None
    message_ref: str | None
    hard: bool
    status: str  # the enhanced status code, e.g. 5.1.1 (no address, no free text)


def parse_dsn(raw: bytes) -> Bounce | None:
    """The bounce a DSN reports, or None when it is not a failure/delay report."""
    message = message_from_bytes(raw, policy=policy.compat32)
    if message.get_content_type() != "multipart/report":
        return None
    if (message.get_param("report-type") or "").lower() != "delivery-status":
        return None
    status_part = original = None
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/delivery-status":
            status_part = part
        elif content_type in ("message/rfc822", "text/rfc822-headers"):
            original = part
    if status_part is None:
        return None
    verdict = _verdict(status_part)
    if verdict is None:
        return None
    hard, status = verdict
    message_id, ref = _original_ids(original)
    return Bounce(message_id, ref, hard, status)


def read_spool(folder: str | Path) -> list[tuple[Path, Bounce | None]]:
    """Every `*.eml` file in a bounce spool folder with its parsed bounce (sorted by name)."""
    return [(path, parse_dsn(path.read_bytes())) for path in sorted(Path(folder).glob("*.eml"))]


def _verdict(part: Message) -> tuple[bool, str] | None:
    """(hard, status) from the per-recipient fields; the first failed recipient decides."""
    payload = part.get_payload()
    blocks: list[Message] = payload if isinstance(payload, list) else []
    if not blocks:  # some parsers leave the body as text: parse the field groups ourselves
        text = part.get_payload(decode=True) or b""
        blocks = [
            message_from_bytes(chunk.strip() + b"\n", policy=policy.compat32)
            for chunk in re.split(rb"\r?\n\r?\n", text)
            if chunk.strip()
        ]
    soft: tuple[bool, str] | None = None
    for block in blocks:
        action = (block.get("Action") or "").strip().lower()
        match = _STATUS.search(block.get("Status") or "")
        if not match or action not in ("failed", "delayed"):
            continue
        if action == "failed" and match.group(1) == "5":
            return True, match.group(0)
        soft = soft or (False, match.group(0))
    return soft


def _original_ids(part: Message | None) -> tuple[str | None, str | None]:
    if part is None:
        return None, None
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        headers: Message = payload[0]
    else:
        text = part.get_payload(decode=True) or (payload if isinstance(payload, str) else "")
        if isinstance(text, str):
            text = text.encode()
        headers = message_from_bytes(text, policy=policy.compat32)
    message_id = (headers.get("Message-ID") or "").strip() or None
    ref = (headers.get("X-Hub-Ref") or "").strip() or None
    return message_id, ref

"""HTTP client rules shared by every outbound connector (FHIR Bulk Data, email engines)."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import ssl
from typing import Any

_SECONDS = re.compile(r"\d{1,9}(?:\.\d{1,6})?")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


def certificate_refused(exc: BaseException) -> bool:
    """Whether an SSLError is a certificate verdict (permanent), not a dropped connection."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return True
        stack.extend([*item.args, item.__cause__, item.__context__, getattr(item, "reason", None)])
    return False

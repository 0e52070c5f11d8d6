"""Typed HL7 v2 values: DTM/DT timestamps and NM numbers, parsed strictly and fast."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from connectors.hl7.errors import Hl7Error

# Digit counts HL7 allows for the date/time part of DTM: YYYY[MM[DD[HH[MM[SS]]]]].
_DTM_LENGTHS = frozenset((4, 6, 8, 10, 12, 14))
# Offsets repeat across a feed (usually one or two per sender), so cache the timedelta objects.
_OFFSETS: dict[str, timedelta] = {}
# HL7 NM: optional sign, digits, optional decimal point; no exponent, no nan/inf.
_NM = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _offset(text: str) -> timedelta:
    """'+0215' -> timedelta(hours=2, minutes=15); raises ValueError on anything else."""
    cached = _OFFSETS.get(text)
    if cached is not None:
        return cached
    digits = text[1:]
    if len(digits) != 4 or not (digits.isascii() and digits.isdigit()):
        raise ValueError("bad offset")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 14 or minutes > 59:
        raise ValueError("bad offset")
    delta = timedelta(hours=hours, minutes=minutes)
    if text[0] == "-":
        delta = -delta
    if len(_OFFSETS) < 256:  # bound the cache: garbage input must not grow it forever
        _OFFSETS[text] = delta
    return delta


def _split_dtm(text: str) -> tuple[str, str, timedelta | None]:
    """Split a DTM into (digits, fraction, offset), validating the grammar."""
    offset: timedelta | None = None
    if len(text) > 5 and text[-5] in "+-":
        offset = _offset(text[-5:])
        text = text[:-5]
    elif "+" in text or "-" in text:
        raise ValueError("bad offset")
    fraction = ""
    if "." in text:
        text, fraction = text.split(".", 1)
        if not (1 <= len(fraction) <= 4 and fraction.isascii() and fraction.isdigit()):
            raise ValueError("bad fraction")
        if len(text) != 14:  # fractions only follow full seconds
            raise ValueError("bad fraction")
    # isascii() first: str.isdigit() also accepts non-ASCII digits that int() would take.
    if len(text) not in _DTM_LENGTHS or not (text.isascii() and text.isdigit()):
        raise ValueError("bad digits")
    return text, fraction, offset


def _iso(digits: str, fraction: str) -> str:
    """HL7 digits (8+ long) -> ISO 8601 basic format, in UTC, that fromisoformat reads in C.

    The UTC designator is part of the string because `replace(tzinfo=...)` costs several
    times more than the whole C parse; the HL7 offset is subtracted afterwards.
    """
    if len(digits) == 8:
        return f"{digits}T00+00:00"
    if fraction:
        return f"{digits[:8]}T{digits[8:]}.{fraction}+00:00"
    return f"{digits[:8]}T{digits[8:]}+00:00"


def parse_dtm(value: str, field: str) -> datetime:
    """HL7 DTM -> aware UTC datetime; any precision from YYYY, with or without an offset.

    Without an offset the sender's local time is unknown to the hub, so UTC is assumed (the
    sender's zone is not in the message; documented in the connector docstring).
    """
    try:
        # The grammar is checked here (ASCII digits, allowed lengths, offset range) and the
        # calendar by the C parser, which also rejects month 13 or second 60.
        # Fast paths for the two usual shapes, YYYYMMDDHHMMSS+ZZZZ and YYYYMMDDHHMMSS.
        if len(value) == 19 and value[14] in "+-":
            digits = value[:14]
            if digits.isascii() and digits.isdigit():
                moment = datetime.fromisoformat(f"{digits[:8]}T{digits[8:]}+00:00")
                return moment - _offset(value[14:])
        elif len(value) == 14 and value.isascii() and value.isdigit():
            return datetime.fromisoformat(f"{value[:8]}T{value[8:]}+00:00")
        digits, fraction, offset = _split_dtm(value.strip())
        if len(digits) >= 8:
            moment = datetime.fromisoformat(_iso(digits, fraction))
        else:
            moment = datetime(int(digits[:4]), int(digits[4:6] or 1), 1, tzinfo=UTC)
        return moment - offset if offset is not None else moment
    except (ValueError, OverflowError):
        raise Hl7Error("BAD_DATE", field, "not a valid HL7 date/time") from None


def parse_date(value: str, field: str) -> date:
    """HL7 DT or DTM -> calendar date (day precision required; the time part is ignored).

    The date is taken as written: shifting a birth date or vaccination date by the sender's
    offset would move it to the wrong calendar day. Year- or month-only values are rejected
    rather than padded, because a made-up day would corrupt identity matching.
    """
    try:
        digits = value if len(value) == 8 else _split_dtm(value.strip())[0]
        if len(digits) < 8 or not (digits.isascii() and digits.isdigit()):
            raise ValueError("needs day precision")
        return date.fromisoformat(digits[:8])
    except ValueError:
        raise Hl7Error("BAD_DATE", field, "not a valid HL7 date (YYYYMMDD)") from None


def parse_nm(value: str, field: str) -> float:
    """HL7 NM -> float; rejects exponents, nan and inf that float() would accept."""
    text = value.strip()
    if not _NM.fullmatch(text):
        raise Hl7Error("BAD_VALUE", field, "not an HL7 numeric (NM) value")
    return float(text)

"""Minimum necessary at send time: a DLP check on every member payload before it leaves.

An audience declares the personalization fields it may carry (marts.segment_catalog). The
send step decrypts only those, but a declared field can still hold more than it should (a
CRM "first name" column with a phone number typed into it, a birth date pasted into a
nickname). A payload is refused when it carries an undeclared field, or a value that looks
like an identifier of a kind its field is not declared to hold.

Findings name the field and the kind of identifier, never the value, so they are safe to
log and to store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Identifier kinds a value can look like, most specific first.
PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}"),
    "ssn": re.compile(r"(?<!\d)\d{3}[- ]?\d{2}[- ]?\d{4}(?!\d)"),
    "phone": re.compile(r"(?<!\d)(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?!\d)"),
    "date": re.compile(
        r"(?<!\d)(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?!\d)"
    ),
    "url": re.compile(r"(?i:\b(?:https?://|www\.)\S+)"),
    "ip_address": re.compile(r"(?<!\d)(?:\d{1,3}\.){3}\d{1,3}(?!\d)"),
    "long_number": re.compile(r"(?<!\d)\d{6,}(?!\d)"),  # MRNs, account and plan numbers
}

# Any of the kinds at all: one search clears the common case (a plain name) at once.
_ANY = re.compile("|".join(f"(?:{p.pattern})" for p in PATTERNS.values()))

# The kinds a field is declared to hold, by field name. A field not listed here holds plain
# words (a given name, a clinic name) and may look like none of the kinds above.
FIELD_KINDS: dict[str, frozenset[str]] = {
    "email": frozenset({"email"}),
    "phone": frozenset({"phone", "long_number"}),
    "birth_date": frozenset({"date"}),
    "appointment_date": frozenset({"date"}),
    "next_appointment": frozenset({"date"}),
}


@dataclass(frozen=True, slots=True)
class DlpFinding:
    """Why a payload was refused: a field and what it looked like (never the value)."""

    field: str
    kind: str  # 'undeclared' or a key of PATTERNS


def scan_value(field_name: str, value: str | None) -> list[str]:
    """The identifier kinds `value` looks like that `field_name` is not declared to hold."""
    if not value or not _ANY.search(value):
        return []
    allowed = FIELD_KINDS.get(field_name, frozenset())
    found = []
    for kind, pattern in PATTERNS.items():
        if kind not in allowed and pattern.search(value):
            found.append(kind)
    return found


def check_payload(
    email: str | None, fields: Mapping[str, str | None], declared: Iterable[str]
) -> list[DlpFinding]:
    """Findings for one member payload; an empty list means it may be sent."""
    declared_set = set(declared)
    findings = []
    # The address itself is the one identifier a send must carry; it must be only that.
    if email is not None and not PATTERNS["email"].fullmatch(email.strip()):
        findings.append(DlpFinding("email", "not_an_address"))
    for name, value in fields.items():
        if name not in declared_set:
            findings.append(DlpFinding(name, "undeclared"))
            continue
        findings.extend(DlpFinding(name, kind) for kind in scan_value(name, value))
    return findings

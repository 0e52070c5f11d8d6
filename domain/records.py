"""What connectors hand to the protect-and-load step: parsed records or rejections.

Connectors parse and validate; they never decide what is PHI. A `SourceRecord` still holds
raw values (names, emails, dates); the protector turns it into landing rows and vault rows
before anything is written. A `Rejection` carries a reason code and a PHI-free message; its
raw payload is encrypted before it reaches the quarantine table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Canonical entities the hub understands. The field names per entity are documented in
# docs/data-contracts.md; the protector's field policy maps each of them to an action.
ENTITIES = (
    "patient",
    "contact",
    "condition",
    "encounter",
    "observation",
    "medication_request",
    "immunization",
    "procedure",
    "appointment",
    "consent",
    "merge",
)


@dataclass(slots=True)
class SourceRecord:
    """One parsed record from a source, in canonical field names, PHI not yet protected."""

    entity: str
    position: str  # where it came from, e.g. "line 17" or "message 3 (MSH-10 MSG00003)"
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Rejection:
    """A record that could not be loaded: why (code + PHI-free message) and its raw bytes."""

    position: str
    reason: str  # a code from domain.reasons.REASONS
    message: str  # must never contain a value from the record; names fields, not contents
    payload: bytes = b""
    entity: str | None = None

    def __post_init__(self) -> None:
        from domain.reasons import REASONS

        if self.reason not in REASONS:
            raise ValueError(f"unknown quarantine reason code {self.reason!r}")

"""The one exception the HL7 connector raises internally: a reason code plus the field it names."""

from __future__ import annotations

from domain.reasons import REASONS


class Hl7Error(Exception):
    """A message cannot be loaded; carries a reason code and a PHI-free text.

    The text is built only from field names such as "PID-7" and fixed wording; callers must
    never pass a value from the message into it, because it ends up in the quarantine table
    and in operator logs.
    """

    def __init__(self, reason: str, field: str, problem: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        self.reason = reason
        self.field = field
        self.text = f"{field}: {problem}" if field else problem
        super().__init__(self.text)

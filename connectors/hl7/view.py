"""The read-only message interface the mapping needs, so fast and hl7apy parses share one mapping.

Positions are HL7's own 1-based numbers: `get(3, 4, 1, 2)` is PID-3, repetition 2,
component 4, subcomponent 1. For MSH, field 1 is the field separator, as in the standard.
Every implementation returns unescaped text with surrounding blanks stripped, and "" for
anything absent or for the HL7 explicit null ``""``; never None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class SegmentView(Protocol):
    """One segment: named access to fields, repetitions, components and subcomponents."""

    @property
    def name(self) -> str: ...

    def get(self, field: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        """The unescaped, stripped value at that position, or ""."""
        ...

    def comps(self, field: int, rep: int = 1, width: int = 1) -> list[str]:
        """Exactly `width` values: `get(field, c, 1, rep)` for c = 1..width, in one call."""
        ...

    def values(self, fields: tuple[int, ...]) -> list[str]:
        """`get(f)` for each field f, in one call (first repetition/component/subcomponent)."""
        ...

    def reps(self, field: int) -> int:
        """How many repetitions the field holds (0 when empty)."""
        ...


class MessageView(Protocol):
    """One message: its segments in order, and lookup by segment id."""

    def segments(self) -> Sequence[SegmentView]: ...

    def all(self, name: str) -> Sequence[SegmentView]: ...

    def first(self, name: str) -> SegmentView | None: ...

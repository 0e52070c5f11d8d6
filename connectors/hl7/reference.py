"""Reference parse with hl7apy, as a MessageView: the slow, independent check of the fast path.

`parse_reference(text)` runs `hl7apy.parser.parse_message(..., find_groups=False,
validation_level=TOLERANT)` and exposes the resulting element tree through the same
`get(field, comp, sub, rep)` interface the mapping uses, so `map_message` can run on either
parse and the outputs can be compared value by value.

How positions are read from the tree: hl7apy names fields "PID_3", components "CX_4" and
subcomponents "HD_1". Primitive fields have one child named after their datatype ("DTM"),
and withdrawn fields have positional children all named "WD", empty ones included; both are
read by position. A child hl7apy leaves unnamed (extra components beyond the datatype's
definition) has no knowable position: reading it raises `Unreadable` instead of guessing.

hl7apy 1.3.5 has no unescape API, so this module resolves escape sequences itself with a
regular expression written independently of `fastparse.unescape`; the comparison tests both.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from typing import Any

from hl7apy.base_datatypes import TextualDataType
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

_SUFFIX = re.compile(r"_(\d+)$")
_HEX_PAIRS = re.compile(r"(?:[0-9A-Fa-f]{2})+")
Position = tuple[int, int, int, int]  # (field, rep, comp, sub), all 1-based


class Unreadable(Exception):
    """hl7apy parsed the element but gives no way to know its position."""


def _positions(children: list[Any]) -> dict[int, Any]:
    """Child elements by 1-based position, from their names (or their order when unnamed)."""
    if not children:
        return {}
    indexed = {}
    for child in children:
        match = _SUFFIX.search(child.name or "")
        if match:
            indexed[int(match.group(1))] = child
    if len(indexed) == len(children):
        return indexed
    if not indexed and all(child.name for child in children):
        # Primitive (single "DTM" child) or withdrawn field ("WD" children, empties kept).
        return {i: child for i, child in enumerate(children, start=1)}
    return {**indexed, -1: None}  # -1 marks children whose position is unknown


def _leaf_text(element: Any) -> str:
    """The raw (still escaped) text of a subcomponent."""
    value = element.value
    if isinstance(value, TextualDataType):
        # to_er7() would re-escape lone escape characters; the parsed text is in .value.
        return value.value if isinstance(value.value, str) else value.to_er7()
    if isinstance(value, str):
        return value
    return element.to_er7()


class _Unescaper:
    """Escape sequences \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\H\\ \\N\\ and \\Xhh..\\ via one regex."""

    def __init__(self, enc: dict[str, str]) -> None:
        esc = enc["ESCAPE"]
        self.esc = esc
        self.pattern = re.compile(f"{re.escape(esc)}([^{re.escape(esc)}]*){re.escape(esc)}")
        self.table = {
            "F": enc["FIELD"],
            "S": enc["COMPONENT"],
            "T": enc["SUBCOMPONENT"],
            "R": enc["REPETITION"],
            "E": esc,
            "H": "",
            "N": "",
        }

    def _replace(self, match: re.Match[str]) -> str:
        body = match.group(1)
        if body in self.table:
            return self.table[body]
        if body.startswith("X") and _HEX_PAIRS.fullmatch(body[1:]):
            data = bytes(int(body[i : i + 2], 16) for i in range(1, len(body), 2))
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data.decode("latin-1")
        return match.group(0)

    def __call__(self, value: str) -> str:
        return self.pattern.sub(self._replace, value) if self.esc in value else value


class ApySegment:
    """One hl7apy segment behind the SegmentView interface."""

    def __init__(self, segment: Any, unescape: _Unescaper) -> None:
        self.name: str = segment.name
        self._unescape = unescape
        self._fields: dict[int, list[Any]] = {}
        # hl7apy leaves fields unnamed when its tables for the version do not define them
        # (e.g. SCH-11 in v2.8). Such a field lies between its named neighbours: when that gap
        # is one position wide the position is certain; otherwise every position in the gap
        # is unreadable rather than empty.
        self._gaps: list[tuple[int, float]] = []
        last, unnamed = 0, []
        for field in [*segment.children, None]:  # None: end of segment
            match = _SUFFIX.search(field.name or "") if field is not None else None
            if field is not None and match is None:
                unnamed.append(field)
                continue
            index = int(match.group(1)) if match else None
            if unnamed:
                if index == last + 2:
                    self._fields[last + 1] = unnamed
                else:
                    self._gaps.append((last + 1, index - 1 if index else float("inf")))
                unnamed = []
            if field is not None and index is not None:
                self._fields.setdefault(index, []).append(field)
                last = index

    def _raw(self, field: int, comp: int, sub: int, rep: int) -> str:
        reps = self._fields.get(field)
        if not reps:
            if any(lo <= field <= hi for lo, hi in self._gaps):
                raise Unreadable(f"{self.name}-{field}: hl7apy keeps no position for it")
            return ""
        if rep > len(reps):
            return ""
        if self.name == "MSH" and field <= 2:  # separator and encoding characters, literal
            return _leaf_text(reps[0].children[0].children[0]) if comp == sub == 1 else ""
        comps = _positions(reps[rep - 1].children)
        component = comps.get(comp)
        if component is None:
            if -1 in comps:
                raise Unreadable(f"{self.name}-{field}: unnamed component")
            return ""
        subs = _positions(component.children)
        leaf = subs.get(sub)
        if leaf is None:
            if -1 in subs:
                raise Unreadable(f"{self.name}-{field}.{comp}: unnamed subcomponent")
            return ""
        return _leaf_text(leaf)

    def get(self, field: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        raw = self._raw(field, comp, sub, rep)
        if self.name == "MSH" and field <= 2:
            return raw
        value = self._unescape(raw).strip()
        return "" if value == '""' else value

    def comps(self, field: int, rep: int = 1, width: int = 1) -> list[str]:
        return [self.get(field, comp, 1, rep) for comp in range(1, width + 1)]

    def values(self, fields: tuple[int, ...]) -> list[str]:
        return [self.get(field) for field in fields]

    def reps(self, field: int) -> int:
        if field not in self._fields and any(lo <= field <= hi for lo, hi in self._gaps):
            raise Unreadable(f"{self.name}-{field}: hl7apy keeps no position for it")
        return len(self._fields.get(field, ()))

    def leaves(self) -> Iterator[tuple[Position, str]]:
        """Every (position, unescaped value) hl7apy can place; unplaceable ones are skipped."""
        for field, reps in sorted(self._fields.items()):
            for rep in range(1, len(reps) + 1):
                comps = _positions(reps[rep - 1].children)
                for comp, component in sorted(comps.items()):
                    if comp < 0:
                        continue
                    for sub in sorted(_positions(component.children)):
                        if sub > 0:
                            yield (field, rep, comp, sub), self.get(field, comp, sub, rep)


class ApyMessage:
    """An hl7apy message behind the MessageView interface."""

    def __init__(self, message: Any) -> None:
        unescape = _Unescaper(message.encoding_chars)
        self.version: str = message.version
        self._segments = [ApySegment(seg, unescape) for seg in message.children]

    def segments(self) -> list[ApySegment]:
        return list(self._segments)

    def all(self, name: str) -> list[ApySegment]:
        return [seg for seg in self._segments if seg.name == name]

    def first(self, name: str) -> ApySegment | None:
        return next((seg for seg in self._segments if seg.name == name), None)


def parse_reference(text: str) -> ApyMessage:
    """Full hl7apy parse of one CR-separated message; hl7apy's own exceptions propagate."""
    message = parse_message(
        text.strip(string.whitespace.replace(" ", "")),
        find_groups=False,
        validation_level=VALIDATION_LEVEL.TOLERANT,
    )
    return ApyMessage(message)

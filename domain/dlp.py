"""DLP scanning of text that must carry no PHI: identifier patterns plus exact known values.

Patterns find identifiers of any person (SSNs, phones, emails, MRN-like ids, dates, URLs, IP
addresses); exact matching finds a given person's own values (their vaulted email, name,
address), case- and accent-insensitively, which patterns cannot. Findings carry the kind and
position only, never the matched text, so reports and logs built from them stay PHI-free.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from domain.normalize import fold_accents

PATTERNS: dict[str, re.Pattern[str]] = {
    "ssn": re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"),
    "phone": re.compile(
        r"(?<![\w-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])"
    ),
    "email": re.compile(r"(?i)(?<![\w.+-])[\w.+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}"),
    "mrn": re.compile(
        r"(?i)\b(?:mrn|medical record(?: number)?|patient id)\s*[:#=]?\s*[a-z0-9-]{4,}"
    ),
    "date": re.compile(
        r"(?<![\d-])(?:(?:19|20)\d{2}-[01]\d-[0-3]\d|[01]?\d/[0-3]?\d/(?:19|20)?\d{2})(?![\d-])"
    ),
    "url": re.compile(r"(?i)\b(?:https?|ftp)://[^\s\"'<>]+|\bwww\.[a-z0-9-]+\.[^\s\"'<>]+"),
    "ip_address": re.compile(
        r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
        r"(?![\d.])|(?i:(?<![\w:])(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}(?![\w:]))"
    ),
}
DEFAULT_KINDS = tuple(PATTERNS)
# Values shorter than this are too common to mean anything as exact matches ('Al', 'Li').
MIN_EXACT_LENGTH = 4


@dataclass(frozen=True, slots=True)
class Finding:
    """A kind of identifier found at [start, end) of the scanned text (never the text)."""

    kind: str
    start: int
    end: int


def fold(text: str) -> str:
    """The form exact values are compared in: accents folded, case-folded."""
    return fold_accents(text).casefold()


class DlpScanner:
    """Scan text for identifier patterns and for exact known values.

    exact: label -> values (e.g. {"email": [...], "family_name": [...]}), or a plain iterable
    (labelled "value"). Exact findings have kind "exact:<label>".
    """

    def __init__(
        self,
        kinds: Iterable[str] = DEFAULT_KINDS,
        exact: Mapping[str, Iterable[str]] | Iterable[str] = (),
    ) -> None:
        self.patterns = {kind: PATTERNS[kind] for kind in kinds}
        labelled = exact if isinstance(exact, Mapping) else {"value": exact}
        self._label_of: dict[str, str] = {}
        for label, values in labelled.items():
            for value in values:
                if value and len(value.strip()) >= MIN_EXACT_LENGTH:
                    self._label_of.setdefault(fold(value.strip()), label)
        alternatives = sorted(self._label_of, key=len, reverse=True)
        # Whole values only: not glued to a letter or digit, so '5550234' inside a hex token
        # or 'anna' inside 'annabel' is not a hit.
        self._exact = (
            re.compile(
                r"(?<![0-9a-z])(?:"
                + "|".join(re.escape(v) for v in alternatives)
                + r")(?![0-9a-z])"
            )
            if alternatives
            else None
        )

    def scan(self, text: str) -> list[Finding]:
        findings = [
            Finding(kind, m.start(), m.end())
            for kind, pattern in self.patterns.items()
            for m in pattern.finditer(text)
        ]
        if self._exact is not None:
            folded = fold(text)
            findings += [
                Finding(f"exact:{self._label_of[m.group(0)]}", m.start(), m.end())
                for m in self._exact.finditer(folded)
            ]
        return findings

    def counts(self, text: str) -> Counter[str]:
        return Counter(f.kind for f in self.scan(text))

    def is_clean(self, text: str) -> bool:
        if any(p.search(text) for p in self.patterns.values()):
            return False
        return self._exact is None or self._exact.search(fold(text)) is None


def redact(text: str, scanner: DlpScanner) -> str:
    """The text with every finding replaced by [KIND] (pattern findings only: exact matches
    are located in the folded text, whose offsets can differ)."""
    spans = sorted(
        (f for f in scanner.scan(text) if not f.kind.startswith("exact:")),
        key=lambda f: f.start,
    )
    out, position = [], 0
    for finding in spans:
        if finding.start < position:
            continue
        out += [text[position : finding.start], f"[{finding.kind.upper()}]"]
        position = finding.end
    out.append(text[position:])
    return "".join(out)

"""The guard on kept values: no PHI in a field the field policy keeps.

A source system can type a name, email, phone or date into a field the policy keeps (state,
language, race text, a code's display). Each text/code/unit/uri value must fit its shape
(KEEP_SHAPES) and hold no DLP pattern (domain.dlp.PATTERNS); in records that carry direct
identifiers (patient, contact) it must also not contain the record's own name, email, phone,
street or SSN/MRN. domain.protect applies it per record; this module holds the rules and the
per-field memory of clean values that keeps the common case to one set lookup.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domain.dlp import MIN_EXACT_LENGTH, PATTERNS, fold

# keep:<type> -> the shape a whole value must fit (None: free text, any shape). Codes have no
# spaces, so a full name, a street or a sentence cannot pass as one.
KEEP_SHAPES: dict[str, re.Pattern[str] | None] = {
    "text": None,
    "code": re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"),
    "unit": re.compile(r"[A-Za-z0-9._:/%\[\]{}*^'+-]{1,64}"),  # UCUM: mg/dL, kg/m2, %, {beats}/min
    "uri": re.compile(r"[A-Za-z0-9._~:/?#\[\]!$&'()*+,;=%-]{1,256}"),  # no '@', no spaces
}
# DLP pattern kinds checked per keep type: a code system URI is a URL by design.
_KEEP_KINDS: dict[str, tuple[str, ...]] = {
    kind: tuple(k for k in PATTERNS if not (kind == "uri" and k == "url")) for kind in KEEP_SHAPES
}
# The pre-filter: every PATTERNS kind but 'mrn' needs a digit, '@', '/' or ':' (URLs 'www.'),
# so values without one skip the scan.
_SUSPECT = re.compile(r"[0-9@/:]|www\.|(?i:mrn|medical record|patient id)")
# A record's own direct identifiers, looked for in its kept values (fields absent from an
# entity's record are simply None).
OWN_IDENTIFIERS = (
    "given_name",
    "family_name",
    "email",
    "phone",
    "address_line",
    "ssn",
    "mrn",
    "drivers_license",
)
DIGITS_ONLY = re.compile(r"\D+")
_DIGIT_RUN = re.compile(r"\d{7}")
PRECHECK_IDENTIFIERS = ("given_name", "family_name", "address_line")


def get_or_none(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The guarded values of a landing row, None for an absent field."""

    def get(landing: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(map(landing.get, names))

    return get


def getter_of(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """operator.itemgetter returning a tuple (even of one name); KeyError on an absent field."""
    if len(names) == 1:
        return get_or_none(names)
    return operator.itemgetter(*names)


# The own-identifier rule's view of a clean row: (its folded text that could hold a name or
# street, whether it has a run of 7 digits). NOTHING_TO_MATCH when neither can match.
NOTHING_TO_MATCH = ("", False)


def _value_text(value: Any) -> tuple[str, bool]:
    """What of one kept value could hold a record's own identifiers: its folded text when
    of MIN_EXACT_LENGTH or more, with a letter, outside VOCABULARY (else ''), and whether it
    has a run of 7 digits."""
    folded = fold(str(value))
    digit_run = _DIGIT_RUN.search(folded) is not None
    if len(folded) < MIN_EXACT_LENGTH or folded in VOCABULARY:
        return "", digit_run
    return (folded if any(c.isalpha() for c in folded) else ""), digit_run


def row_text(row: tuple[Any, ...], memo: dict[Any, tuple[str, bool]]) -> tuple[str, bool]:
    """_value_text of a row of kept values, joined (once per distinct row; per distinct
    value through `memo`, as rows are many more than values)."""
    parts = []
    digit_run = False
    for value in row:
        if value is None or value == "":
            continue
        text = memo.get(value) if value.__class__ is str else None
        if text is None:
            text = _value_text(value)
            if value.__class__ is str:
                if len(memo) >= ACCEPTED_CACHE_SIZE:
                    memo.clear()  # bounded memory; recomputing is correct
                memo[value] = text
        if text[0]:
            parts.append(text[0])
        digit_run = digit_run or text[1]
    if not parts and not digit_run:
        return NOTHING_TO_MATCH
    return "\x00".join(parts), digit_run


# Standard vocabulary that can equal a surname ('White', 'Washington') without saying anything
# about the person: OMB race/ethnicity categories (US Core, HL7 table 0005/0189) and US state
# names. A kept value equal to one of these (folded) is never taken for the record's own name.
VOCABULARY = frozenset(
    fold(term)
    for term in (
        "American Indian or Alaska Native",
        "Asian",
        "Black or African American",
        "Black",
        "Native Hawaiian or Other Pacific Islander",
        "White",
        "Other Race",
        "Other",
        "Unknown",
        "Asked but unknown",
        "Declined",
        "Male",
        "Female",
        "Unknown",
        "Not applicable",
        "Hispanic or Latino",
        "Not Hispanic or Latino",
        *[
            "Alabama",
            "Alaska",
            "Arizona",
            "Arkansas",
            "California",
            "Colorado",
            "Connecticut",
            "Delaware",
            "Florida",
            "Georgia",
            "Hawaii",
            "Idaho",
            "Illinois",
            "Indiana",
            "Iowa",
            "Kansas",
            "Kentucky",
            "Louisiana",
            "Maine",
            "Maryland",
            "Massachusetts",
            "Michigan",
            "Minnesota",
            "Mississippi",
            "Missouri",
            "Montana",
            "Nebraska",
            "Nevada",
            "Ohio",
            "Oklahoma",
            "Oregon",
            "Pennsylvania",
            "Tennessee",
            "Texas",
            "Utah",
            "Vermont",
            "Virginia",
            "Washington",
            "Wisconsin",
            "Wyoming",
        ],
        "New Hampshire",
        "New Jersey",
        "New Mexico",
        "New York",
        "North Carolina",
        "North Dakota",
        "Rhode Island",
        "South Carolina",
        "South Dakota",
        "West Virginia",
        "District of Columbia",
        "Puerto Rico",
    )
)
ACCEPTED_CACHE_SIZE = 4096  # remembered clean values per field, cleared when full


class FieldGuard(set):
    """Plan marker for a guarded keep field: the set of values already found clean."""

    __slots__ = ("kinds", "shape")

    def __init__(self, keep_type: str) -> None:
        super().__init__(("", None))  # an empty value carries nothing
        self.shape = KEEP_SHAPES[keep_type]
        self.kinds = tuple((k, PATTERNS[k]) for k in _KEEP_KINDS[keep_type])

    def reason(self, value: Any) -> str | None:
        """Why `value` may not be kept (a PHI-free reason), or None when it is clean."""
        text = value if isinstance(value, str) else str(value)
        if self.shape is not None and self.shape.fullmatch(text) is None:
            return "not_code"
        if _SUSPECT.search(text) is not None:
            for kind, pattern in self.kinds:
                if pattern.search(text) is not None:
                    return f"dlp:{kind}"
        return None


def contains_whole(text: str, needle: str) -> bool:
    """Whether `needle` occurs in `text` not glued to a letter or digit ('anna' is not in
    'annabel'), as domain.dlp's exact matching does."""
    start = text.find(needle)
    while start >= 0:
        end = start + len(needle)
        if (start == 0 or not text[start - 1].isalnum()) and (
            end == len(text) or not text[end].isalnum()
        ):
            return True
        start = text.find(needle, start + 1)
    return False


@dataclass(slots=True)
class RowGuard:
    """An entity's guarded keep fields, checked once per record after the copy.

    clean_rows remembers whole tuples of guarded values found clean, so a record whose
    combination was seen before costs one C itemgetter call and one set lookup.
    """

    names: tuple[str, ...]
    guards: tuple[FieldGuard, ...]
    getter: Callable[[dict[str, Any]], tuple[Any, ...]]  # landing -> guarded values
    identifiers: tuple[str, ...]  # the entity's own direct identifier fields (may be empty)
    # clean row -> its row_text (or NOTHING_TO_MATCH when the entity has no identifiers)
    clean_rows: dict[Any, tuple[str, bool]] = field(default_factory=dict)
    texts: dict[Any, tuple[str, bool]] = field(default_factory=dict)  # value -> _value_text

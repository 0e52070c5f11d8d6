"""k-anonymity of the analyst tier: small cells of quasi-identifiers, and how to remove them.

Safe Harbor removes the 18 identifiers, but a rare combination of ZIP3, birth year and sex
can still single a person out. The report counts records per combination (cell), lists the
cells holding fewer than k records, and suggests the least generalization (birth year to 5-
or 10-year bands, ZIP3 to its first digit, sex withheld) after which the records still in
small cells are few enough to suppress (at most `max_suppression` of all records).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

DEFAULT_QUASI_IDENTIFIERS = ("zip3", "birth_year", "sex")
DEFAULT_K = 11  # the small-cell threshold CMS uses for public data releases
SUPPRESSED = "*"


def _band(width: int) -> Callable[[Any], Any]:
    def generalize(year: Any) -> Any:
        if year is None or year == SUPPRESSED:
            return year
        start = int(year) // width * width
        return f"{start}-{start + width - 1}"

    return generalize


def _zip_region(zip3: Any) -> Any:
    return zip3 if zip3 in (None, SUPPRESSED) else f"{str(zip3)[:1]}xx"


def _suppress(_: Any) -> Any:
    return SUPPRESSED


def _identity(value: Any) -> Any:
    return value


# Per quasi-identifier, generalization levels from none to full suppression: (name, function).
HIERARCHIES: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {
    "birth_year": [
        ("year", _identity),
        ("5-year band", _band(5)),
        ("10-year band", _band(10)),
        ("suppressed", _suppress),
    ],
    "zip3": [("zip3", _identity), ("first digit", _zip_region), ("suppressed", _suppress)],
    "sex": [("sex", _identity), ("suppressed", _suppress)],
}


@dataclass(frozen=True)
class SmallCell:
    values: tuple[Any, ...]
    count: int


@dataclass
class Suggestion:
    """The least generalization meeting the suppression budget, and what remains to suppress."""

    levels: dict[str, str]
    cells_below_k: int
    records_to_suppress: int
    share_suppressed: float


@dataclass
class KAnonReport:
    k: int
    quasi_identifiers: tuple[str, ...]
    records: int
    cells: int
    small_cells: list[SmallCell] = field(default_factory=list)
    records_in_small_cells: int = 0
    suggestion: Suggestion | None = None

    @property
    def satisfied(self) -> bool:
        return not self.small_cells

    def as_dict(self, include_cells: bool = True) -> dict[str, object]:
        report: dict[str, object] = {
            "k": self.k,
            "quasi_identifiers": list(self.quasi_identifiers),
            "records": self.records,
            "cells": self.cells,
            "cells_below_k": len(self.small_cells),
            "records_in_small_cells": self.records_in_small_cells,
            "satisfied": self.satisfied,
        }
        if include_cells:
            report["small_cells"] = [
                {**dict(zip(self.quasi_identifiers, c.values, strict=True)), "count": c.count}
                for c in self.small_cells
            ]
        if self.suggestion is not None:
            report["suggestion"] = self.suggestion.__dict__
        return report


def cell_counts(rows: Iterable[Sequence[Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(row) for row in rows)


def kanon_report(
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    k: int = DEFAULT_K,
    quasi_identifiers: Sequence[str] = DEFAULT_QUASI_IDENTIFIERS,
    max_suppression: float = 0.01,
) -> KAnonReport:
    """Cells below k over the quasi-identifiers, with a generalization/suppression suggestion.

    rows: mappings with the quasi-identifier keys, or sequences in quasi_identifiers order.
    """
    if k < 2:
        raise ValueError("k must be at least 2")
    quasi = tuple(quasi_identifiers)
    unknown = [q for q in quasi if q not in HIERARCHIES]
    if unknown:
        raise ValueError(f"no generalization hierarchy for {unknown}")
    records = [tuple(r[q] for q in quasi) if isinstance(r, Mapping) else tuple(r) for r in rows]
    counts = cell_counts(records)
    small = sorted(
        (SmallCell(values, n) for values, n in counts.items() if n < k),
        key=lambda c: (c.count, tuple(str(v) for v in c.values)),
    )
    report = KAnonReport(k, quasi, len(records), len(counts), small, sum(c.count for c in small))
    report.suggestion = suggest(records, k, quasi, max_suppression)
    return report


def suggest(
    records: list[tuple[Any, ...]],
    k: int,
    quasi: tuple[str, ...],
    max_suppression: float,
) -> Suggestion:
    """Search the generalization lattice from least to most general (fewest steps first)."""
    total = max(len(records), 1)
    lattice = sorted(
        product(*(range(len(HIERARCHIES[q])) for q in quasi)),
        key=lambda levels: (sum(levels), levels),
    )
    best: Suggestion | None = None
    for levels in lattice:
        functions = [HIERARCHIES[q][level][1] for q, level in zip(quasi, levels, strict=True)]
        counts = Counter(
            tuple(f(v) for f, v in zip(functions, record, strict=True)) for record in records
        )
        small_cells = [n for n in counts.values() if n < k]
        suggestion = Suggestion(
            {q: HIERARCHIES[q][level][0] for q, level in zip(quasi, levels, strict=True)},
            len(small_cells),
            sum(small_cells),
            round(sum(small_cells) / total, 4),
        )
        if suggestion.share_suppressed <= max_suppression:
            return suggestion
        if best is None or suggestion.records_to_suppress < best.records_to_suppress:
            best = suggestion
    assert best is not None
    return best

"""Read a CRM/CDP export (CSV, JSONL, Parquet) into contact records, per row or per batch.

`read_crm_frames` is the fast path for a loader: typed polars frames plus rejections.
`read_crm` gives the same rows as SourceRecord/Rejection objects in file order; building one
Python object per row is what bounds its speed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from itertools import repeat

from connectors.crm.convert import ROW_COLUMN, CrmBatch, convert
from connectors.crm.mapping import CrmMapping
from connectors.crm.raw import raw_batches
from domain.records import Rejection, SourceRecord


def read_crm_frames(uri: str, mapping: CrmMapping) -> Iterator[CrmBatch]:
    """Typed batches of `uri`: good rows as a polars frame in canonical columns + rejections."""
    for raw in raw_batches(uri, mapping):
        yield convert(raw, mapping)


def read_crm(uri: str, mapping: CrmMapping) -> Iterator[SourceRecord | Rejection]:
    """One SourceRecord(entity='contact') or one Rejection per data row, in row order."""
    for batch in read_crm_frames(uri, mapping):
        frame = batch.frame
        names = ["subject_system", *(c for c in frame.columns if c not in _NOT_FIELDS)]
        # Lengths are equal by construction; strict=False only skips a per-row check.
        values = zip(repeat("crm"), *(frame[c].to_list() for c in names[1:]), strict=False)
        rows: Iterator[int | Rejection]
        if not batch.rejections:
            # Rows of a batch without rejections are contiguous: no need to materialise them.
            first = frame[ROW_COLUMN][0] if frame.height else 0
            rows = iter(range(first, first + frame.height))
        else:
            rows = _interleave(frame[ROW_COLUMN].to_list(), batch.rejections)
        # `values` first: zip must not pull (and lose) an item of `rows` once values run out.
        for vals, n in zip(values, rows, strict=False):
            while type(n) is Rejection:
                yield n
                n = next(rows)
            yield SourceRecord("contact", f"row {n}", dict(zip(names, vals, strict=False)))
        yield from rows  # only rejections are left: those after the last good row


_NOT_FIELDS = (ROW_COLUMN, "subject_system")


def _interleave(rows: list[int], rejections: list[Rejection]) -> Iterator[int | Rejection]:
    """Good row numbers and rejections merged in row order (both are sorted)."""
    done = 0
    for rejection in rejections:
        upto = bisect_left(rows, int(rejection.position.split(" ", 1)[1]), lo=done)
        yield from rows[done:upto]
        done = upto
        yield rejection
    yield from rows[done:]


def unmapped_columns(uri: str, mapping: CrmMapping) -> dict[str, int]:
    """Columns in `uri` the mapping drops, with their count of non-empty cells (one pass)."""
    total: Counter[str] = Counter()
    for raw in raw_batches(uri, mapping):
        total.update(raw.unmapped)
    return dict(total)

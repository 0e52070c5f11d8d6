"""Type a raw CRM batch, vectorised in polars: good rows in canonical columns, bad rows out.

Per mapped column: values are stripped and an empty cell is null. `date`/`datetime` parse with
the mapping's format (datetimes without one accept the common ISO 8601 shapes; a value
without an offset is UTC); `bool` accepts yes/no/true/false/1/0/y/n in any case; `email` must
look like local@domain.tld. A non-empty cell that fails its type quarantines the row
(CRM_BAD_DATE, CRM_BAD_BOOLEAN, CRM_BAD_EMAIL); an empty key quarantines it as
CRM_MISSING_KEY, which wins over type errors. Messages name the row and the source columns
(from the mapping), never a cell value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from connectors.crm.mapping import ColumnSpec, CrmMapping
from connectors.crm.raw import ROW, RawBatch
from domain.records import Rejection

ROW_COLUMN = "_row"  # in CrmBatch.frame: the 1-based data row number of each good row
_IDX = "__crm_idx__"
_UTC = "UTC"
_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z")
_UTC_TAILS = ("", "Z", "z", "+00:00", "-00:00", "+0000")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M")
_BOOLS = {"yes": True, "y": True, "true": True, "1": True}
_BOOLS |= {"no": False, "n": False, "false": False, "0": False}
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_REASON = {"date": "CRM_BAD_DATE", "datetime": "CRM_BAD_DATE", "bool": "CRM_BAD_BOOLEAN"}
_REASON["email"] = "CRM_BAD_EMAIL"


@dataclass
class CrmBatch:
    """Typed rows of one batch: a frame of good rows plus the rows quarantined."""

    frame: pl.DataFrame  # ROW_COLUMN, subject_system, then canonical fields (mapping order)
    rejections: list[Rejection] = field(default_factory=list)  # in row order
    unmapped: dict[str, int] = field(default_factory=dict)  # dropped column -> non-empty cells


def convert(raw: RawBatch, mapping: CrmMapping) -> CrmBatch:
    """Type `raw` per `mapping`."""
    specs = list(mapping.columns.items())
    schema = raw.frame.schema
    # Stage 1: strip every mapped text column once (each later expression reuses it).
    stripped = raw.frame.select(
        pl.col(ROW),
        *(
            pl.col(src).str.strip_chars() if schema[src] == pl.String else pl.col(src)
            for src, _ in specs
        ),
    ).with_row_index(_IDX)
    # Stage 2: typed values plus, per checked column, whether the cell was non-empty.
    values: list[pl.Expr] = []
    checks: list[tuple[str, str, str, str]] = []  # (present col, field, reason, message part)
    lenient: list[tuple[str, str, str]] = []  # (source, field, present col): ISO-default datetimes
    for i, (source, spec) in enumerate(specs):
        col = pl.col(source)
        present = (col.str.len_bytes() > 0) if schema[source] == pl.String else col.is_not_null()
        value, checked = _typed(col, present, schema[source], spec)
        values.append(value.alias(spec.field))
        if checked:
            flag = f"__present{i}__"
            values.append(present.fill_null(False).alias(flag))
            checks.append((flag, spec.field, _REASON[spec.type], _describe(source, spec)))
            if spec.type == "datetime" and spec.format is None and schema[source] == pl.String:
                lenient.append((source, spec.field, flag))
    key = pl.col(mapping.key)
    no_key = (key.is_null() | (key.str.len_bytes() == 0)).alias("__nokey__")
    typed = stripped.select(pl.col(ROW), pl.col(_IDX), *values, no_key)
    typed = _second_chance(typed, stripped, lenient)
    # Stage 3: a row is bad if its key is empty or a non-empty cell did not parse.
    bad = [
        (pl.col(flag) & pl.col(fld).is_null()).alias(f"__bad_{fld}") for flag, fld, _, _ in checks
    ]
    any_bad = pl.any_horizontal(pl.col("__nokey__"), *bad)
    rejections = list(raw.rejections)
    bad_rows = typed.filter(any_bad)
    if bad_rows.height:
        flags = bad_rows.select(ROW, _IDX, "__nokey__", *bad)
        rejections.extend(_reject(flags, raw, mapping, [c[2:] for c in checks]))
        rejections.sort(key=_row_of)
        typed = typed.filter(~any_bad)
    good = typed.select(
        pl.col(ROW).alias(ROW_COLUMN),
        pl.lit("crm").alias("subject_system"),
        *(spec.field for _, spec in specs),
    )
    return CrmBatch(good, rejections, raw.unmapped)


def _row_of(rejection: Rejection) -> int:
    return int(rejection.position.split(" ", 1)[1])


def _typed(
    col: pl.Expr, present: pl.Expr, dtype: pl.DataType, spec: ColumnSpec
) -> tuple[pl.Expr, bool]:
    """(value expression, whether failures must be checked) for one (stripped) column."""
    if dtype != pl.String:
        # A typed Parquet column already of the mapped type (raw.py casts everything else).
        if spec.type == "datetime":
            tz = getattr(dtype, "time_zone", None)
            col = col.dt.cast_time_unit("us")
            col = col.dt.convert_time_zone(_UTC) if tz else col.dt.replace_time_zone(_UTC)
        return col, False
    if spec.type == "str":
        return pl.when(present).then(col), False
    if spec.type == "email":
        # An invalid address becomes null so that stage 3 sees it as a failed cell.
        return pl.when(present & col.str.contains(_EMAIL)).then(col), True
    if spec.type == "bool":
        value = col.str.to_lowercase().replace_strict(_BOOLS, default=None, return_dtype=pl.Boolean)
    elif spec.type == "date":
        value = col.str.to_date(spec.format or "%Y-%m-%d", strict=False)
    else:
        value = _datetime(col, spec.format)
    return value, True


def _datetime(s: pl.Expr, fmt: str | None) -> pl.Expr:
    if fmt is None:
        # polars parses a fixed "%Y-%m-%dT%H:%M:%S" several times faster than anything with
        # %z or %.f, so the common UTC shapes (no offset, Z, +00:00) take that route; other
        # shapes get a second chance below, only in the rows that need it.
        tail = s.str.slice(19)
        head = s.str.slice(0, 19).str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us")
        return pl.when(tail.is_in(_UTC_TAILS)).then(head.dt.replace_time_zone(_UTC))
    if "%z" in fmt or "%:z" in fmt or "%#z" in fmt:
        return _aware(s, fmt)
    if any(d in fmt for d in ("%H", "%I", "%M", "%S", "%T", "%R")):
        return _naive(s, fmt)
    # A date-only format for a datetime field: midnight UTC.
    return s.str.to_date(fmt, strict=False).cast(pl.Datetime("us")).dt.replace_time_zone(_UTC)


def _aware(s: pl.Expr, fmt: str) -> pl.Expr:
    parsed = s.str.to_datetime(fmt, strict=False, time_unit="us")
    return parsed.dt.convert_time_zone(_UTC)


def _naive(s: pl.Expr, fmt: str) -> pl.Expr:
    return s.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone(_UTC)


def _lenient_datetime(s: pl.Expr) -> pl.Expr:
    """Every accepted datetime shape, for the rows the fast ISO path could not read."""
    s = s.str.replace(r"[Zz]$", "+00:00")
    day = s.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us"))
    return pl.coalesce(
        *(_aware(s, f) for f in _AWARE_FORMATS),
        *(_naive(s, f) for f in _NAIVE_FORMATS),
        day.dt.replace_time_zone(_UTC),
    )


def _second_chance(
    typed: pl.DataFrame, stripped: pl.DataFrame, lenient: list[tuple[str, str, str]]
) -> pl.DataFrame:
    """Re-parse failed cells of format-less datetime columns with every accepted shape."""
    for source, fld, flag in lenient:
        failed = typed.select(pl.arg_where(pl.col(flag) & pl.col(fld).is_null())).to_series()
        if failed.len() == 0:
            continue
        fixed = stripped[failed].select(_lenient_datetime(pl.col(source)).alias(fld))[fld]
        typed = typed.with_columns(typed[fld].scatter(failed, fixed))
    return typed


def _describe(source: str, spec: ColumnSpec) -> str:
    if spec.type == "bool":
        return f"column {source!r} is not a boolean (yes/no/true/false/1/0/y/n)"
    if spec.type == "email":
        return f"column {source!r} is not a syntactically valid email address"
    if spec.format:
        return f"column {source!r} does not parse as {spec.type} with format {spec.format}"
    return f"column {source!r} does not parse as an ISO 8601 {spec.type}"


def _reject(
    flags: pl.DataFrame, raw: RawBatch, mapping: CrmMapping, checks: list[tuple[str, str]]
) -> list[Rejection]:
    """Rejections for the bad rows; `flags` holds ROW, index, no-key flag, then one per check."""
    out = []
    for row in flags.iter_rows():
        n, idx, no_key, failed_flags = row[0], row[1], row[2], row[3:]
        pos = f"row {n}"
        failed = [c for c, flag in zip(checks, failed_flags, strict=True) if flag]
        if no_key:
            reason = "CRM_MISSING_KEY"
            parts = [f"key column {mapping.key!r} is empty"] + [c[1] for c in failed]
        else:
            reason = failed[0][0]
            parts = [c[1] for c in failed]
        message = f"{pos}: " + "; ".join(parts)
        out.append(Rejection(pos, reason, message, raw.payload(idx), "contact"))
    return out

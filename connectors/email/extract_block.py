"""Tracking-extract NDJSON lines mapped to events in bulk, with polars.

Mapping an extract row by row (`file_exchange._extract_row`: orjson, then a dozen string
operations and a datetime parse per row) cost about 6 µs an event, more than the database's
share of storing it. Here a block of lines is parsed and mapped column-wise, but only when
every row takes the common shape whose mapping is plain: every value a string, ids without
surrounding white space, ASCII event and bounce types, `occurred_at` as
`YYYY-MM-DDTHH:MM:SS` (with `Z`, `+00:00` or no offset, and no or six fraction digits) that
is a real time. Any other block answers None and the caller maps it row by row, so the
events (texts included) and the errors never differ from the row-by-row mapping; property
tests compare the two.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

# No white space around (Python's strip() would change it; it also strips \x1c-\x1f).
_PLAIN = r"^[^\s\x1c-\x1f](.*[^\s\x1c-\x1f])?$"
_ASCII_WORD = r"^[A-Za-z0-9_-]*$"
# Times whose ISO text Python's isoformat() gives back unchanged, up to `Z` -> `+00:00`:
# no fraction or six digits (not all zeros: isoformat() leaves those out), UTC or no offset.
_TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?(Z|\+00:00)?$"
_ZERO_FRACTION = ".000000"
_SECONDS = "%Y-%m-%dT%H:%M:%S"
_INFER_ROWS = 100  # polars' default
_QUOTE, _COLON, _SPACE = ord('"'), ord(":"), ord(" ")
_WHITE_SPACE = np.array([ord(" "), ord("\t"), ord("\r")], np.uint8)
# Canonical keys (file_exchange._columns) that extracts leave out of events they do not apply to.
_OPTIONAL_KEYS = ("audience_id", "bounce_type", "machine_open")


def block_events(
    lines: list[bytes],
    kind: str | None,
    columns_of: Callable[[tuple[str, ...]], tuple[tuple[str, str], ...] | None],
    kinds: dict[str, str],
) -> tuple[pl.DataFrame, int] | None:
    """(the mapped events in line order as EVENT_COLUMNS, events without an external id or type)
    for NDJSON `lines`, or None when the block is not of the common shape (a blank line
    included). columns_of: the (key, canonical name) pairs kept of the keys, None when they
    are canonical already (file_exchange._columns); kinds: event type stems."""
    data = b"\n".join(lines)
    # Every key is followed by a string (`"key":"` or `"key": "`). polars would turn other
    # values (numbers, booleans, objects) into text its own way (true, not Python's True),
    # and a null could hide a key it dropped (below). A `":` inside a string (an escaped
    # quote) only sends the block the row-by-row way.
    strings = _string_values(data)
    if strings is None:
        return None
    frame = _read(data)
    # polars infers the keys from the first rows and drops a key first seen later, such as
    # a key only some events have (bounce_type, machine_open). Such a block is read again
    # with those keys added when the others are canonical (as fast as the first read), else
    # with the keys of every row (four times the parse; row by row cost five times more).
    if frame is not None and frame.height == len(lines) and _values(frame) != strings:
        if columns_of(tuple(frame.columns)) is None:
            keys = dict.fromkeys([*frame.columns, *_OPTIONAL_KEYS])
            frame = _read(data, schema=dict.fromkeys(keys, pl.String))
        if frame is not None and _values(frame) != strings:
            frame = _read(data, infer_rows=None)
    # It also skips blank lines: every line must be a row and every string value in a column.
    if frame is None or frame.height != len(lines) or _values(frame) != strings:
        return None
    columns = columns_of(tuple(frame.columns))
    if columns is not None:
        canon = [c for _, c in columns]
        if len(set(canon)) != len(canon):
            return None  # two keys for one field: the row-by-row way keeps the last
        frame = frame.select(pl.col(k).alias(c) for k, c in columns)

    def text(name: str) -> pl.Expr:
        if name not in frame.columns:
            return pl.lit("", pl.String)
        return pl.col(name).fill_null("")  # a key some rows lack

    given_type = text("event_type")
    event_type = pl.when(given_type != "").then(given_type).otherwise(pl.lit(kind or ""))
    event_type = event_type.str.to_lowercase()
    stem = event_type.str.strip_chars_end("s")
    # The fields as text, once: the checks and the mapping below read them several times
    # each, and an eager select computes a shared subexpression again for every use (the
    # event type's mapping alone took 10 ms a 100,000 events, for each of six uses).
    fields = frame.select(
        external=text("external_id"),
        given_type=given_type,
        event_type=stem.replace_strict(kinds, default=event_type, return_dtype=pl.String),
        bounce_given=text("bounce_type"),
        occurred=text("occurred_at"),
        event_id=text("event_id"),
        audience=text("audience_id"),
        machine_given=_machine_open(frame),
    )
    external, given_type = pl.col("external"), pl.col("given_type")
    event_type, bounce_given = pl.col("event_type"), pl.col("bounce_given")
    occurred, event_id, audience = pl.col("occurred"), pl.col("event_id"), pl.col("audience")
    fields = fields.with_columns(mapped=(external != "") & (event_type != ""))
    mapped = pl.col("mapped")
    bounce = bounce_given.str.to_lowercase()
    bounce = (
        pl.when(event_type != "bounce")
        .then(pl.lit(None, pl.String))
        .when(bounce.str.contains("hard", literal=True))
        .then(pl.lit("hard"))
        .otherwise(pl.lit("soft"))  # given and not hard, or not given: never suppress on a guess
    )
    machine = pl.col("machine_given") & (event_type == "open")
    shaped = fields.select(
        # Checks of the common shape, on every row or the mapped ones (the row-by-row
        # mapping reads no further than the external id and type of an unmapped row).
        ((external == "") | external.str.contains(_PLAIN)).all().alias("plain_external"),
        given_type.str.contains(_ASCII_WORD).all().alias("plain_type"),
        pl.lit(kind or "").str.contains(_ASCII_WORD).alias("plain_kind"),
        bounce_given.str.contains(_ASCII_WORD).all().alias("plain_bounce"),
        (~mapped | (event_id != "")).all().alias("has_ids"),
        (~mapped | occurred.str.contains(_TIME)).all().alias("iso_time"),
        (~mapped | ~occurred.str.contains(_ZERO_FRACTION, literal=True)).all().alias("fraction"),
        (~mapped | occurred.str.slice(0, 19).str.to_datetime(_SECONDS, strict=False).is_not_null())
        .all()
        .alias("real_time"),
    ).row(0)
    if not all(shaped):
        return None
    # As isoformat() writes the time: `Z` as +00:00, and a time without offset read as UTC.
    utc = (
        pl.when(occurred.str.ends_with("Z"))
        .then(occurred.str.strip_suffix("Z") + "+00:00")
        .when(occurred.str.ends_with("+00:00"))
        .then(occurred)
        .otherwise(occurred + "+00:00")
    )
    events = fields.filter(mapped).select(
        event_id.alias("event_id"),
        pl.when(audience != "").then(audience).alias("audience"),
        external.alias("person_token"),
        event_type.alias("event_type"),
        utc.alias("occurred_at"),
        machine.alias("machine_open"),
        bounce.alias("bounce_type"),
    )
    return events, frame.height - events.height


def _string_values(data: bytes) -> int | None:
    """How many `":` pairs there are, if every one is followed by `"` or `' "'` and no colon
    follows white space (a space, tab or carriage return after a key, which polars would
    accept and then turn the number after it into text; inside a string it only costs the
    row-by-row way); else None. Vectorized with numpy: the `bytes.count` and `in` passes
    it replaces took four times as long (60 ms for 100,000 events), holding the GIL
    throughout while the threads preparing and storing the pages before waited for it."""
    view = np.frombuffer(data, np.uint8)
    colons = np.flatnonzero(view[1:] == _COLON) + 1  # a colon first has no key before it
    before = view[colons - 1]
    if np.isin(before, _WHITE_SPACE).any():
        return None
    pairs = colons[before == _QUOTE]
    if pairs.size and pairs[-1] + 2 >= view.size:
        return None  # no string can follow the last pair (not JSON: the row-by-row way says so)
    after = view[pairs + 1]
    strings = (after == _QUOTE) | ((after == _SPACE) & (view[pairs + 2] == _QUOTE))
    return len(pairs) if bool(strings.all()) else None


def _read(
    data: bytes, infer_rows: int | None = _INFER_ROWS, schema: dict[str, Any] | None = None
) -> pl.DataFrame | None:
    """NDJSON as a frame: of `schema`, or with the keys of the first `infer_rows` rows (None:
    of all); None if not all lines are JSON objects (the row-by-row way tells what is wrong)."""
    try:
        return pl.read_ndjson(io.BytesIO(data), infer_schema_length=infer_rows, schema=schema)
    except Exception:
        return None


def _values(frame: pl.DataFrame) -> int:
    """Non-null values in the frame."""
    if not frame.width:
        return 0
    counts = frame.select(pl.all().is_not_null().sum()).row(0)
    return sum(counts)


def _machine_open(frame: pl.DataFrame) -> pl.Expr:
    """`str(value or "").lower() in ("1", "true", "yes")` for a text column."""
    if "machine_open" not in frame.columns:
        return pl.lit(False)
    return (
        pl.col("machine_open")
        .cast(pl.String)
        .fill_null("")
        .str.to_lowercase()
        .is_in(["1", "true", "yes"])
    )

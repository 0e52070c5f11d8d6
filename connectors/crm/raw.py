"""Raw CRM batches: the source rows as strings, with their row numbers, per file format.

CSV is parsed by pyarrow's streaming reader (multi-threaded, quoted newlines allowed), because
it reports rows with the wrong number of fields: polars pads a short row with empty cells and
cannot tell it from a row whose trailing cells are empty. The first time pyarrow meets such a
row, or bytes that do not decode, the rest of the file is read with the `csv` module instead
(text decoded with surrogateescape, so undecodable bytes survive to be reported as
BAD_ENCODING and kept in the payload). Good files never take that path.

JSONL is parsed line by line with orjson (a bad line must not fail the file); Parquet is
streamed by row group batches. Row numbers are 1-based data rows: the header and blank lines
are not rows.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from connectors.crm.mapping import CrmMapping
from connectors.sources import extension, local_path, open_binary
from domain.records import Rejection

ROW = "__crm_row__"  # column added to every raw frame: the 1-based data row number
BATCH_ROWS = 100_000  # rows per batch for JSONL, Parquet and the csv-module fallback
BLOCK_BYTES = 1 << 22  # pyarrow CSV block: ~25k rows of the contacts shape per batch
_SURROGATE = re.compile("[\udc80-\udcff]")
# The csv module refuses a field over 128 KiB by default and cannot resynchronise after it,
# which would quarantine the rest of the file as one record. Long free-text cells (notes) are
# legitimate, so allow fields up to the size the other connectors accept for a whole record.
MAX_FIELD_BYTES = 64 << 20
csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_BYTES))


class CrmSchemaError(ValueError):
    """The file as a whole does not fit the mapping (missing or duplicate columns...)."""


@dataclass
class RawBatch:
    """Rows as read: strings in source column names, plus rows refused before typing."""

    frame: pl.DataFrame  # source columns (String, or typed Parquet columns) + ROW
    payload: Callable[[int], bytes]  # raw bytes of frame row i, for quarantine
    rejections: list[Rejection] = field(default_factory=list)
    unmapped: dict[str, int] = field(default_factory=dict)  # non-empty values per dropped column


def resolve_format(uri: str, mapping: CrmMapping) -> str:
    """csv, jsonl or parquet: from the mapping, else from the file extension."""
    if mapping.format != "auto":
        return mapping.format
    ext = extension(uri)
    if ext in ("csv", "tsv", "txt"):
        return "csv"
    if ext in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if ext in ("parquet", "pq"):
        return "parquet"
    raise CrmSchemaError(f"cannot tell the format of {uri}: set `format` in mapping {mapping.name}")


def raw_batches(uri: str, mapping: CrmMapping) -> Iterator[RawBatch]:
    """Raw batches of `uri` in file order."""
    fmt = resolve_format(uri, mapping)
    if fmt == "csv":
        return _csv_batches(uri, mapping)
    if fmt == "jsonl":
        return _jsonl_batches(uri, mapping)
    return _parquet_batches(uri, mapping)


def _check_columns(names: list[str], mapping: CrmMapping, uri: str) -> None:
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise CrmSchemaError(f"{uri}: duplicate column names {dupes}")
    missing = [c for c in mapping.columns if c not in names]
    if missing:
        raise CrmSchemaError(
            f"{uri}: columns {missing} of mapping {mapping.name} are not in the file"
        )


def _unmapped_counts(frame: pl.DataFrame, mapping: CrmMapping) -> dict[str, int]:
    dropped = [c for c in frame.columns if c not in mapping.columns and c != ROW]
    if not dropped:
        return {}
    exprs = []
    for c in dropped:
        col = pl.col(c)
        present = (col.str.len_bytes() > 0) if frame.schema[c] == pl.String else col.is_not_null()
        exprs.append(present.sum().alias(c))
    return {c: int(v) for c, v in frame.select(exprs).row(0, named=True).items()}


# --- CSV -------------------------------------------------------------------------------------


def _py_encoding(mapping: CrmMapping) -> str:
    name = codecs.lookup(mapping.encoding).name
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name  # drop a BOM


def _csv_header(uri: str, mapping: CrmMapping) -> list[str] | None:
    with open_binary(uri) as raw:
        text = io.TextIOWrapper(raw, encoding=_py_encoding(mapping), errors="replace", newline="")
        reader = csv.reader(text, delimiter=mapping.delimiter, quotechar=mapping.quote_char)
        for row in reader:
            if row:
                return row
    return None


class _Fallback(Exception):
    """pyarrow met a ragged row or undecodable bytes: continue with the csv module."""


def _csv_batches(uri: str, mapping: CrmMapping) -> Iterator[RawBatch]:
    header = _csv_header(uri, mapping)
    if header is None:
        return  # an empty export: no rows
    _check_columns(header, mapping, uri)
    payload_of = _csv_payload_writer(header, mapping)
    done = 0
    try:
        for table in _arrow_csv(uri, mapping, header):
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            frame = frame.with_row_index(ROW, offset=done + 1)
            done += frame.height
            unmapped = _unmapped_counts(frame, mapping)
            yield RawBatch(frame, _row_payload(frame, header, payload_of), [], unmapped)
    except _Fallback:
        yield from _python_csv(uri, mapping, header, done, payload_of)


def _arrow_csv(uri: str, mapping: CrmMapping, header: list[str]) -> Iterator[pa.RecordBatch]:
    """Record batches from pyarrow; raises _Fallback (before yielding a tainted batch).

    A row with the wrong number of fields stops the read with ArrowInvalid (a fallback):
    no `invalid_row_handler`, which pyarrow calls with the row decoded as UTF-8 and, for a
    row that is not, prints the UnicodeDecodeError's traceback to stderr on its way."""
    name = codecs.lookup(mapping.encoding).name
    read_options = pa_csv.ReadOptions(
        use_threads=True,
        block_size=BLOCK_BYTES,
        encoding="utf8" if name in ("utf-8", "utf-8-sig") else name,
    )
    parse_options = pa_csv.ParseOptions(
        delimiter=mapping.delimiter,
        quote_char=mapping.quote_char,
        newlines_in_values=True,
        ignore_empty_lines=True,
    )
    convert_options = pa_csv.ConvertOptions(
        column_types={h: pa.string() for h in header},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    with ExitStack() as stack:
        source: Any = local_path(uri) or stack.enter_context(open_binary(uri))
        try:
            reader = pa_csv.open_csv(source, read_options, parse_options, convert_options)
            if reader.schema.names != header:
                raise _Fallback  # pyarrow read the header differently: trust the csv module
            yield from reader
        except (pa.ArrowInvalid, UnicodeDecodeError):
            raise _Fallback from None


def _csv_payload_writer(header: list[str], mapping: CrmMapping) -> Callable[[list[Any]], bytes]:
    encoding = _py_encoding(mapping).replace("utf-8-sig", "utf-8")

    def payload(values: list[Any]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, delimiter=mapping.delimiter, quotechar=mapping.quote_char).writerow(
            ["" if v is None else v for v in values]
        )
        line = buf.getvalue().rstrip("\r\n")
        try:
            return line.encode(encoding, errors="surrogateescape")
        except UnicodeEncodeError:
            return line.encode("utf-8", errors="replace")

    return payload


def _row_payload(
    frame: pl.DataFrame, header: list[str], payload_of: Callable[[list[Any]], bytes]
) -> Callable[[int], bytes]:
    return lambda i: payload_of([frame[c][i] for c in header])


def _python_csv(
    uri: str,
    mapping: CrmMapping,
    header: list[str],
    skip: int,
    payload_of: Callable[[list[Any]], bytes],
) -> Iterator[RawBatch]:
    """The slow, exact path: every record checked for width and decodability."""
    ncols = len(header)
    with open_binary(uri) as raw:
        text = io.TextIOWrapper(
            raw, encoding=_py_encoding(mapping), errors="surrogateescape", newline=""
        )
        reader = csv.reader(text, delimiter=mapping.delimiter, quotechar=mapping.quote_char)
        records = (r for r in reader if r)  # blank lines are not rows
        next(records, None)  # the header
        n = 0
        good: list[list[str]] = []
        rows: list[int] = []
        rejections: list[Rejection] = []
        try:
            for rec in records:
                n += 1
                if n <= skip:
                    continue
                pos = f"row {n}"
                if len(rec) != ncols:
                    msg = f"{pos}: has {len(rec)} fields, the header has {ncols}"
                    rejections.append(
                        Rejection(pos, "CRM_RAGGED_ROW", msg, payload_of(rec), "contact")
                    )
                elif _SURROGATE.search("\x00".join(rec)):
                    msg = f"{pos}: not valid text in encoding {mapping.encoding}"
                    rejections.append(
                        Rejection(pos, "BAD_ENCODING", msg, payload_of(rec), "contact")
                    )
                else:
                    good.append(rec)
                    rows.append(n)
                if len(rows) + len(rejections) >= BATCH_ROWS:
                    yield _python_batch(header, good, rows, rejections, payload_of, mapping)
                    good, rows, rejections = [], [], []
        except csv.Error:
            # The csv module cannot resynchronise after this (e.g. a field over its size
            # limit): one rejection stands for the rest of the file, which is not read.
            pos = f"row {n + 1}"
            msg = f"{pos}: CSV structure breaks here; this row and the rest of the file are unread"
            rejections.append(Rejection(pos, "CRM_RAGGED_ROW", msg, b"", "contact"))
        if rows or rejections:
            yield _python_batch(header, good, rows, rejections, payload_of, mapping)


def _python_batch(
    header: list[str],
    good: list[list[str]],
    rows: list[int],
    rejections: list[Rejection],
    payload_of: Callable[[list[Any]], bytes],
    mapping: CrmMapping,
) -> RawBatch:
    data: dict[str, Any] = {ROW: pl.Series(ROW, rows, dtype=pl.UInt32)}
    columns = zip(*good, strict=True) if good else ([] for _ in header)
    for name, values in zip(header, columns, strict=True):
        data[name] = pl.Series(name, values, dtype=pl.String)
    frame = pl.DataFrame(data)
    unmapped = _unmapped_counts(frame, mapping)
    return RawBatch(frame, _row_payload(frame, header, payload_of), rejections, unmapped)


# --- JSONL -----------------------------------------------------------------------------------


def _as_text(value: Any) -> str | None:
    """A JSON value as the string a CSV cell would hold (the typing stage parses it)."""
    if value is None or type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) in (int, float):
        return str(value)
    return orjson.dumps(value).decode()


def _jsonl_batches(uri: str, mapping: CrmMapping) -> Iterator[RawBatch]:
    names = list(mapping.columns)
    known = set(names)
    loads = orjson.loads
    with open_binary(uri) as stream:
        n = 0
        cols: list[list[str | None]] = [[] for _ in names]
        rows: list[int] = []
        lines: list[bytes] = []
        rejections: list[Rejection] = []
        dropped: Counter[str] = Counter()
        for line in stream:
            if not line or line.isspace():
                continue
            n += 1
            pos = f"row {n}"
            raw = line.rstrip(b"\r\n")
            try:
                obj = loads(line)
            except orjson.JSONDecodeError:
                rejections.append(_bad_json(pos, raw))
                continue
            if type(obj) is not dict:
                msg = f"{pos}: not a JSON object"
                rejections.append(Rejection(pos, "NOT_JSON", msg, raw, "contact"))
                continue
            for col, name in zip(cols, names, strict=True):
                col.append(_as_text(obj.get(name)))
            for k, v in obj.items():
                if k not in known:
                    dropped[k] += v is not None and v != ""  # zero still names the column
            rows.append(n)
            lines.append(raw)
            if len(rows) + len(rejections) >= BATCH_ROWS:
                yield _jsonl_batch(names, cols, rows, lines, rejections, dropped)
                cols, rows, lines, rejections = [[] for _ in names], [], [], []
                dropped = Counter()
        if rows or rejections:
            yield _jsonl_batch(names, cols, rows, lines, rejections, dropped)


def _bad_json(pos: str, raw: bytes) -> Rejection:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection(pos, "BAD_ENCODING", f"{pos}: not valid UTF-8", raw, "contact")
    return Rejection(pos, "NOT_JSON", f"{pos}: not valid JSON", raw, "contact")


def _jsonl_batch(
    names: list[str],
    cols: list[list[str | None]],
    rows: list[int],
    lines: list[bytes],
    rejections: list[Rejection],
    dropped: Counter[str],
) -> RawBatch:
    data: dict[str, Any] = {ROW: pl.Series(ROW, rows, dtype=pl.UInt32)}
    for name, values in zip(names, cols, strict=True):
        data[name] = pl.Series(name, values, dtype=pl.String)
    return RawBatch(pl.DataFrame(data), lines.__getitem__, rejections, dict(dropped))


# --- Parquet ---------------------------------------------------------------------------------

_TYPED_OK = {"date": (pl.Date,), "datetime": (pl.Datetime,), "bool": (pl.Boolean,)}


def _parquet_batches(uri: str, mapping: CrmMapping) -> Iterator[RawBatch]:
    with ExitStack() as stack:
        source: Any = local_path(uri) or stack.enter_context(open_binary(uri))
        pf = pq.ParquetFile(source)
        names = pf.schema_arrow.names
        _check_columns(names, mapping, uri)
        done = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            frame = _parquet_as_text(frame, mapping, uri)
            unmapped = _unmapped_counts(frame, mapping)
            frame = frame.with_row_index(ROW, offset=done + 1)
            done += frame.height
            yield RawBatch(frame, _json_payload(frame, names), [], unmapped)


def _parquet_as_text(frame: pl.DataFrame, mapping: CrmMapping, uri: str) -> pl.DataFrame:
    """Mapped columns as String, unless already of the mapped type (a real Parquet date)."""
    casts = []
    for name, spec in mapping.columns.items():
        dtype = frame.schema[name]
        if dtype == pl.String or isinstance(dtype, _TYPED_OK.get(spec.type, ())):
            continue
        if dtype.is_nested():
            raise CrmSchemaError(f"{uri}: column {name!r} has a nested type")
        casts.append(pl.col(name).cast(pl.String))
    return frame.with_columns(casts) if casts else frame


def _json_payload(frame: pl.DataFrame, names: list[str]) -> Callable[[int], bytes]:
    def payload(i: int) -> bytes:
        row = frame.select(names).row(i, named=True)
        return orjson.dumps(row, default=str)

    return payload

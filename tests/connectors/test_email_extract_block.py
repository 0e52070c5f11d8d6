"""Tracking extracts mapped in bulk (polars) give exactly what the row-by-row mapping gives:
the same rows, texts included, and the same errors; blocks of any other shape are mapped
row by row."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.email import extract_block
from connectors.email.envelope import iter_line_blocks, iter_lines
from connectors.email.events import event_rows_of
from connectors.email.extract_block import block_events
from connectors.email.file_exchange import (
    KIND_BY_NAME,
    FileExchangeError,
    _columns,
    _extract_row,
    _map_block,
)

COMMON = [
    {"event_id": "x1", "event_type": "open", "external_id": "p1", "audience_id": "flu",
     "occurred_at": "2026-03-02T09:00:00Z"},
    {"event_id": "x2", "event_type": "Bounces", "external_id": "p2",
     "occurred_at": "2026-03-02T09:00:00.250000+00:00", "bounce_type": "Hard"},
    {"event_id": "x3", "event_type": "bounce", "external_id": "p3", "audience_id": "",
     "occurred_at": "2026-03-02T09:00:00"},
    {"event_id": "x4", "event_type": "open", "external_id": "p4", "occurred_at":
     "2026-03-02T09:00:00Z", "machine_open": "TRUE", "email": "someone@example.org"},
    {"event_id": "x5", "event_type": "", "external_id": "", "occurred_at": "not a time"},
]  # fmt: skip


def row_by_row(lines: list[bytes], kind: str | None) -> list:
    rows = [_extract_row(orjson.loads(line), kind, "t.ndjson") for line in lines if line.strip()]
    return [row for row in rows if row is not None]


def test_the_common_shape_is_mapped_in_bulk_to_the_same_rows():
    lines = [orjson.dumps(row) for row in COMMON]
    bulk = block_events(lines, "send", _columns, KIND_BY_NAME)
    assert bulk is not None
    events, unmapped = bulk
    assert unmapped == 1
    assert event_rows_of(events) == row_by_row(lines, "send")
    assert event_rows_of(events)[1][3:] == (
        "bounce",
        "2026-03-02T09:00:00.250000+00:00",
        False,
        "hard",
    )


def test_json_written_with_spaces_and_aliases_is_mapped_in_bulk_too():
    rows = [
        {"EventType": "click", "SubscriberKey": "p1", "EventDate": "2026-03-02T09:00:00Z",
         "event_id": "c1", "Email": "someone@example.org"},
    ] * 3  # fmt: skip
    lines = [json.dumps(row).encode() for row in rows]
    bulk = block_events(lines, None, _columns, KIND_BY_NAME)
    assert bulk is not None and event_rows_of(bulk[0]) == row_by_row(lines, None)


@pytest.mark.parametrize(
    "odd",
    [
        {"machine_open": True},  # not a string: polars would write it its own way
        {"event_id": 7},
        {"external_id": " p9 "},  # stripped row by row
        {"occurred_at": "2026-03-02T09:00:00.000000Z"},  # isoformat() drops the fraction
        {"occurred_at": "2026-03-02T09:00:00+05:30"},
        {"occurred_at": "2026-02-30T09:00:00Z"},  # not a day: the row-by-row error
        {"bounce_type": None},
        {"event_id": ""},  # derived from the content row by row
        {"event_type": "öffnen"},
    ],
)
@pytest.mark.parametrize("spaced", [False, True])
def test_other_shapes_take_the_row_by_row_way_with_its_results(odd, spaced):
    rows = [dict(COMMON[0], event_id=f"y{i}") for i in range(3)] + [{**COMMON[1], **odd}]
    dump = (lambda row: json.dumps(row).encode()) if spaced else orjson.dumps
    lines = [dump(row) for row in rows]
    assert block_events(lines, None, _columns, KIND_BY_NAME) is None
    try:
        expected = row_by_row(lines, None)
    except FileExchangeError as exc:
        with pytest.raises(FileExchangeError, match=str(exc)):
            _map_block(lines, None, "t.ndjson")
    else:
        events, read, unmapped = _map_block(lines, None, "t.ndjson")
        assert (event_rows_of(events), read, unmapped) == (expected, 4, 4 - len(expected))


@pytest.mark.parametrize("late", ["bounce_type", "campaign"])
def test_a_key_first_seen_late_in_a_block_is_not_lost_and_the_block_stays_bulk(late, monkeypatch):
    """polars infers a frame's columns from its first rows: the counts catch the rest, and
    the block is read again with the optional keys added (keys only some events have, such
    as bounce_type, are the common case of a real extract), or else with every row's keys."""
    rows = [dict(COMMON[0], event_id=f"z{i}") for i in range(300)]
    rows[250][late] = "hard"
    rows[250]["event_type"] = "bounce"
    lines = [orjson.dumps(row) for row in rows]
    reads = []
    real_read = extract_block._read

    def read(data, **options):
        reads.append(sorted(options))
        return real_read(data, **options)

    monkeypatch.setattr(extract_block, "_read", read)
    bulk = block_events(lines, None, _columns, KIND_BY_NAME)
    assert bulk is not None and event_rows_of(bulk[0]) == row_by_row(lines, None)
    # An optional key costs one more read, with it added; any other key a read of every row.
    with_schema = [[], ["schema"]]
    assert reads == ([*with_schema, ["infer_rows"]] if late == "campaign" else with_schema)
    events, read, _ = _map_block(lines, None, "t.ndjson")
    assert event_rows_of(events) == row_by_row(lines, None) and read == 300
    assert event_rows_of(events)[250][6] == ("hard" if late == "bounce_type" else "soft")


@pytest.mark.parametrize("space", [b" ", b"\t", b"\r", b" \t "])
def test_white_space_before_a_colon_sends_the_block_row_by_row(space):
    """`"key" :7` escapes the pair counts that find values other than strings; here a
    repeated key (a pair polars keeps one value of) evens the value count out too."""
    line = b'{"event_id":"a","event_id":"a","occurred_at":"2026-03-02T09:00:00Z",'
    line += b'"event_type":"open","external_id"' + space + b":7}"
    lines = [orjson.dumps(COMMON[0]), line]
    assert block_events(lines, None, _columns, KIND_BY_NAME) is None


def test_blank_lines_are_lines_not_events():
    lines = [orjson.dumps(COMMON[0]), b"", b"  ", orjson.dumps(COMMON[1])]
    events, read, unmapped = _map_block(lines, None, "t.ndjson")
    assert (len(event_rows_of(events)), read, unmapped) == (2, 2, 0)


_TEXT = st.sampled_from(["open", "Opens", "bounce", "BOUNCES", "unsub", "complaint", "click",
                         "sent", "delivered", "", " open", "x\ty", 'q"uote', "back\\slash",
                         "é", "hard", "soft", "yes", "1", "true", "0"])  # fmt: skip
_TIMES = st.sampled_from(["2026-03-02T09:00:00Z", "2026-03-02T09:00:00", "2026-03-02T09:00:00.5Z",
                          "2026-03-02T09:00:00.123456+00:00", "2026-03-02T09:00:00-04:00",
                          "2026-13-02T09:00:00Z", "2026-03-02 09:00:00Z"])  # fmt: skip
_VALUE = _TEXT | st.none() | st.booleans() | st.integers(0, 2)
_ROW = st.fixed_dictionaries(
    {"external_id": st.sampled_from(["p1", "p2", "", " p3"]) | st.none()},
    optional={
        "event_id": st.sampled_from(["e1", "e2", "", "e\\u00e9"]),
        "event_type": _TEXT | st.none(),
        "audience_id": _TEXT | st.none(),
        "occurred_at": _TIMES,
        "bounce_type": _VALUE,
        "machine_open": _VALUE,
        "SubscriberKey": st.sampled_from(["p4", "p5"]),
        "email": st.just("someone@example.org"),
        "url": _TEXT,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_ROW, min_size=1, max_size=8),
    st.sampled_from([None, "open", "bounce"]),
    st.booleans(),
    st.lists(st.integers(0, 8), max_size=2),
)
def test_bulk_and_row_by_row_mappings_never_differ(rows, kind, spaced, blanks):
    dump = (lambda r: json.dumps(r).encode()) if spaced else orjson.dumps
    lines = [dump(row) for row in rows]
    for at in blanks:
        lines.insert(min(at, len(lines)), b"")
    try:
        expected = row_by_row(lines, kind)
    except FileExchangeError as exc:
        with pytest.raises(FileExchangeError) as raised:
            _map_block(lines, kind, "t.ndjson")
        assert str(raised.value) == str(exc)
        return
    events, read, unmapped = _map_block(lines, kind, "t.ndjson")
    non_blank = sum(1 for line in lines if line.strip())
    assert event_rows_of(events) == expected
    assert (read, unmapped) == (non_blank, non_blank - len(expected))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6), st.booleans())
def test_line_blocks_are_the_same_lines(pieces, crlf):
    if crlf:
        pieces = [piece.replace(b"\n", b"\r\n") for piece in pieces]
    flat = [line for block in iter_line_blocks(iter(pieces)) for line in block]
    assert flat == list(iter_lines(iter(pieces))) == list(_reference_lines(b"".join(pieces)))


def _reference_lines(data: bytes):
    *lines, rest = data.split(b"\n")
    yield from (line.rstrip(b"\r") for line in lines)
    if rest:
        yield rest.rstrip(b"\r")


_WORD = st.sampled_from(
    ["open", "Opens", "BOUNCES", "unsub", "complaint", "click", "sent", "delivered", "hard",
     "Soft", "yes", "1", "true", "no", "unknown_kind"]
)  # fmt: skip
_CLEAN_ROW = st.fixed_dictionaries(
    {
        # (A value starting with a colon looks like one more key to the counts: row by row.)
        "event_id": st.text("abcxyz0123-:_/", min_size=1, max_size=6).filter(
            lambda text: not text.startswith(":")
        ),
        "external_id": st.sampled_from(["p1", "p2", "", "t1_ab12"]),
        "occurred_at": st.sampled_from(
            ["2026-03-02T09:00:00Z", "2026-03-02T23:59:59", "2024-02-29T00:00:00.000001+00:00"]
        ),
    },
    optional={
        "event_type": _WORD | st.just(""),
        "audience_id": st.sampled_from(["flu", "", "a b"]),
        "bounce_type": _WORD | st.just(""),
        "machine_open": _WORD | st.just(""),
        "email": st.just("someone@example.org"),
        "url": st.just("https://example.org/x?y=1"),
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_CLEAN_ROW, min_size=1, max_size=8), st.sampled_from([None, "open", "bounce"]),
       st.booleans())  # fmt: skip
def test_every_row_of_the_common_shape_maps_in_bulk_as_row_by_row(rows, kind, spaced):
    dump = (lambda r: json.dumps(r).encode()) if spaced else orjson.dumps
    lines = [dump(row) for row in rows]
    bulk = block_events(lines, kind, _columns, KIND_BY_NAME)
    assert bulk is not None
    expected = row_by_row(lines, kind)
    assert event_rows_of(bulk[0]) == expected and bulk[1] == len(lines) - len(expected)

"""The file-exchange adapter: sealed audience files out, tracking extracts back, over
local paths and file:// URIs; the envelope refuses tampering, truncation and wrong keys."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.email import EngineIdempotencyConflict, Member
from connectors.email.envelope import SEGMENT, EnvelopeError, EnvelopeWriter, decrypt_stream
from connectors.email.events import event_rows_of
from connectors.email.file_exchange import FileExchangeEngine, FileExchangeError

KEY = bytes(range(32))
OLD_KEY = bytes(range(1, 33))


def seal(data: bytes, key: bytes = KEY, key_id: str = "k2026") -> bytes:
    sink = io.BytesIO()
    with EnvelopeWriter(sink, key, key_id) as writer:
        for start in range(0, len(data), 7001):  # odd-sized writes cross segment edges
            writer.write(data[start : start + 7001])
    return sink.getvalue()


def unseal(blob: bytes, keys: dict[str, bytes] | None = None) -> bytes:
    return b"".join(decrypt_stream(io.BytesIO(blob), keys or {"k2026": KEY}))


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=3 * SEGMENT + 10) | st.sampled_from([b"", b"x" * SEGMENT]))
def test_envelope_round_trips_any_content(data):
    assert unseal(seal(data)) == data


def test_envelope_refuses_tampering_truncation_appending_and_wrong_keys():
    blob = seal(os.urandom(2 * SEGMENT + 123))
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 1
    header = 4 + 1 + len("k2026") + 7
    at_boundary = blob[: header + SEGMENT + 16]  # a whole first segment, nothing after
    cases = {
        "flipped byte": bytes(flipped),
        "truncated mid-segment": blob[:-5],
        "truncated at a segment boundary": at_boundary,
        "appended": blob + blob[-50:],
        "header edited": blob[:6] + b"X" + blob[7:],
    }
    for label, bad in cases.items():
        with pytest.raises(EnvelopeError):
            unseal(bad)
        assert label
    with pytest.raises(EnvelopeError, match="key id"):
        unseal(blob, {"other": KEY})
    with pytest.raises(EnvelopeError):
        unseal(blob, {"k2026": OLD_KEY})
    with pytest.raises(EnvelopeError, match="not an encrypted"):
        unseal(b"external_id,email\n")


@pytest.fixture(params=["path", "file-uri"])
def exchange(request, tmp_path: Path) -> FileExchangeEngine:
    out, inbox = tmp_path / "out", tmp_path / "in"
    inbox.mkdir()
    if request.param == "file-uri":
        return FileExchangeEngine(
            out.as_uri(), inbox.as_uri(), {"k2026": KEY, "k2025": OLD_KEY}, "k2026"
        )
    return FileExchangeEngine(str(out), str(inbox), {"k2026": KEY, "k2025": OLD_KEY}, "k2026")


def people(n: int) -> list[Member]:
    return [
        Member(f"p{i:06d}", f"person{i}@example.org", {"given_name": f"Name{i}"}) for i in range(n)
    ]


def folder(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def test_audience_files_are_sealed_and_read_back_with_the_shared_key(exchange):
    exchange.ensure_audience("flu", "flu", "treatment")
    results = exchange.upsert("flu", people(3), "sync-1:add:p000000")
    assert [r.status for r in results] == ["ok"] * 3
    exchange.remove("flu", ["p000001"], "sync-1:remove:p000001")
    files = sorted(p.name for p in (folder(exchange.outbox) / "flu").iterdir())
    assert files == [
        "sync-1%3Aadd%3Ap000000.upsert.csv.ahx",
        "sync-1%3Aadd%3Ap000000.upsert.csv.ahx.sha256",
        "sync-1%3Aremove%3Ap000001.remove.csv.ahx",
        "sync-1%3Aremove%3Ap000001.remove.csv.ahx.sha256",
    ]
    sealed = folder(exchange.outbox) / "flu" / files[0]
    assert b"@example.org" not in sealed.read_bytes() and b"Name1" not in sealed.read_bytes()
    rows = exchange.read_outbox_file(str(sealed))
    assert rows[1] == {
        "external_id": "p000001",
        "email": "person1@example.org",
        "given_name": "Name1",
    }


def test_a_retried_batch_writes_once_and_a_reused_key_is_a_conflict(exchange):
    exchange.upsert("flu", people(2), "batch-a")
    target = folder(exchange.outbox) / "flu" / "batch-a.upsert.csv.ahx"
    before = target.read_bytes()
    exchange.upsert("flu", people(2), "batch-a")
    assert target.read_bytes() == before  # not rewritten (a fresh nonce would change it)
    with pytest.raises(EngineIdempotencyConflict):
        exchange.upsert("flu", people(3), "batch-a")


def test_tracking_extracts_come_back_as_events_exactly_once(exchange):
    inbox = folder(exchange.inbox)
    (inbox / "2026-03-01-sends.csv").write_text(
        "subscriber_key,audience,email,event_date\n"
        "p000001,flu,person1@example.org,2026-03-01T09:00:00Z\n"
        "p000002,flu,person2@example.org,2026-03-01T09:00:01Z\n"
    )
    opens = (
        "external_id,audience_id,occurred_at,machine_open\n"
        "p000001,flu,2026-03-01T09:00:03Z,true\n"
        "p000001,flu,2026-03-01T12:00:00Z,false\n"
    )
    (inbox / "2026-03-01-opens.csv.ahx").write_bytes(seal(opens.encode(), OLD_KEY, "k2025"))
    (inbox / "2026-03-01-zclicks.ndjson").write_text(
        '{"event_id": "c-1", "event_type": "click", "external_id": "p000001",'
        ' "occurred_at": "2026-03-01T12:01:00+00:00", "url": "https://clinic.example/a"}\n'
    )
    (inbox / "2026-03-02-bounces.csv").write_text(
        "external_id,occurred_at,bounce_type\n"
        "p000002,2026-03-01T09:00:05Z,Hard bounce\n"
        ",2026-03-01T09:00:05Z,Hard bounce\n"  # no external id: never mapped on email
    )
    (inbox / "notes.txt").write_text("ignored")

    seen, cursor = [], None
    while True:
        page = exchange.events(cursor, limit=2)
        seen += page.events
        if not page.events:
            break
        cursor = page.next_cursor
    kinds = [(e.type, e.external_id, e.machine_open, e.bounce_type) for e in seen]
    assert kinds == [
        ("open", "p000001", True, None),
        ("open", "p000001", False, None),
        ("sent", "p000001", False, None),
        ("sent", "p000002", False, None),
        ("click", "p000001", False, None),
        ("bounce", "p000002", False, "hard"),
    ]
    assert len({e.event_id for e in seen}) == len(seen)
    assert exchange.events(cursor, 10).events == []

    (inbox / "2026-03-03-unsubscribes.csv").write_text(
        "external_id,occurred_at\np000001,2026-03-03T08:00:00Z\n"
    )
    later = exchange.events(cursor, 10).events
    assert [(e.type, e.external_id) for e in later] == [("unsubscribe", "p000001")]


def test_a_tampered_extract_is_refused(exchange):
    blob = bytearray(seal(b"external_id,occurred_at\np000001,2026-03-01T09:00:00Z\n"))
    blob[-3] ^= 0x40
    (folder(exchange.inbox) / "opens.csv.ahx").write_bytes(bytes(blob))
    with pytest.raises(FileExchangeError) as refused:
        exchange.events(None, 10)
    assert refused.value.code == "FILE_DECRYPT_FAILED"


def test_extract_rows_match_the_events_and_resume_from_any_cursor(exchange):
    inbox = folder(exchange.inbox)
    (inbox / "a-opens.csv").write_text(
        "external_id,audience_id,occurred_at,machine_open,email\n"
        "p000001,flu,2026-03-01T09:00:03Z,true,person1@example.org\n"
        "p000002,flu,2026-03-01T09:00:04,false,person2@example.org\n"  # naive: UTC
        ",flu,2026-03-01T09:00:05Z,false,person3@example.org\n"  # no external id
    )
    lines = [
        f'{{"event_type": "bounce", "external_id": "p{i:06d}", "occurred_at":'
        f' "2026-03-01T10:00:{i:02d}+01:00", "bounce_type": "{"hard" if i % 2 else "soft"}"}}'
        for i in range(7)
    ]
    lines.insert(3, "")  # a blank line counts as a line, never as an event
    (inbox / "b-bounces.ndjson.ahx").write_bytes(seal("\n".join(lines).encode()))

    events = []
    cursor = None
    while page := exchange.events(cursor, limit=3):
        events += page.events
        cursor = page.next_cursor
        if not page.events:
            break
    expected = [
        (e.event_id, e.audience_id or None, e.external_id, e.type, e.occurred_at, e.machine_open,
         e.bounce_type)
        for e in events
    ]  # fmt: skip

    def as_events(rows):
        return [(*r[:4], dt.datetime.fromisoformat(r[4]), *r[5:]) for r in rows]

    for limit in (1, 2, 4, 100):
        rows, cursor, read, unmapped = [], None, 0, 0
        while True:
            page = exchange.event_rows(cursor, limit)
            rows += event_rows_of(page.rows)
            read, unmapped = read + page.read, unmapped + page.unmapped
            cursor = page.next_cursor
            if not page.read:
                break
        assert as_events(rows) == expected and (read, unmapped) == (len(expected) + 1, 1)
        assert len(exchange.event_rows(cursor, 10).rows) == 0
    # A cursor handed out by `events` (or a page read elsewhere) resumes without a gap.
    half = exchange.events(None, 5)
    rest = exchange.event_rows(half.next_cursor, 100)
    assert as_events(event_rows_of(rest.rows)) == expected[5:]


def test_a_large_extract_of_the_common_shape_pages_and_resumes_like_event_by_event(exchange):
    """Mapped in bulk a page at a time, across the envelope's pieces: the same rows as the
    events one by one, whatever the page size and wherever a cursor resumes."""
    kinds = ("sent", "open", "click", "bounce", "unsubscribe")
    rows = [
        {"event_id": f"big-{i}", "event_type": kinds[i % 5], "external_id": f"p{i % 97:06d}",
         "audience_id": "flu", "occurred_at": f"2026-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
         **({"bounce_type": "hard" if i % 10 == 3 else "soft"} if i % 5 == 3 else {})}
        for i in range(3000)
    ]  # fmt: skip
    data = b"\n".join(orjson.dumps(row) for row in rows) + b"\n"
    assert len(data) > 3 * SEGMENT
    (folder(exchange.inbox) / "big.ndjson.ahx").write_bytes(seal(data))
    expected, cursor = [], None
    while page := exchange.events(cursor, limit=1000):
        expected += [(e.event_id, e.audience_id, e.external_id, e.type, e.occurred_at,
                      e.machine_open, e.bounce_type) for e in page.events]  # fmt: skip
        cursor = page.next_cursor
        if not page.events:
            break
    assert len(expected) == 3000

    def as_events(got):
        return [(*r[:4], dt.datetime.fromisoformat(r[4]), *r[5:]) for r in got]

    for limit in (7, 999, 5000):
        got, cursor = [], None
        while (page := exchange.event_rows(cursor, limit)).read:
            assert isinstance(page.rows, pl.DataFrame)  # the bulk way
            got += event_rows_of(page.rows)
            cursor = page.next_cursor
        assert as_events(got) == expected
    middle = exchange.events(None, 1234).next_cursor
    assert as_events(event_rows_of(exchange.event_rows(middle, 5000).rows)) == expected[1234:]

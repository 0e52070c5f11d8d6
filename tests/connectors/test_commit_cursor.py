"""connectors/warehouse/commit_cursor.py: rows are read once each, whatever order their
transactions commit in (the consent fast path reads landing files and suppressions so)."""

from __future__ import annotations

import uuid

from connectors.warehouse.commit_cursor import CommitCursor, cursor_now, read_since

FILES = "landing.source_files"


def _add_file(conn, label: str) -> int:
    (file_id,) = conn.execute(
        "insert into landing.source_files (uri, source, size_bytes, sha256)"
        " values (%s, 'crm', 1, %s) returning file_id",
        (f"file:///cursor/{label}.csv", uuid.uuid4().hex),
    ).fetchone()
    return file_id


def _read(conn, cursor: CommitCursor) -> tuple[set[int], CommitCursor]:
    rows, after = read_since(conn, FILES, "file_id", cursor)
    conn.commit()
    # through JSON, as the sensor keeps it between ticks
    return {file_id for (file_id,) in rows}, CommitCursor.from_json(after.as_json())


def test_a_file_that_commits_after_a_later_one_is_still_read(warehouse):
    with warehouse.connect() as early, warehouse.connect() as late, warehouse.connect() as reader:
        cursor = cursor_now(reader, FILES)
        reader.commit()
        first = _add_file(early, "first")  # takes the lower file_id, commits last
        second = _add_file(late, "second")
        late.commit()
        assert second > first

        seen, cursor = _read(reader, cursor)
        assert seen == {second}

        early.commit()
        seen, cursor = _read(reader, cursor)
        assert seen == {first}

        seen, cursor = _read(reader, cursor)
        assert seen == set()
        assert cursor.seen == frozenset()  # no writer in flight: nothing left to remember


def test_a_cursor_taken_now_reads_nothing_before_it_and_everything_after(warehouse):
    with warehouse.connect() as writer, warehouse.connect() as reader:
        _add_file(writer, "before")
        writer.commit()
        cursor = cursor_now(reader, FILES)
        reader.commit()
        seen, cursor = _read(reader, cursor)
        assert seen == set()
        after = [_add_file(writer, f"after-{n}") for n in range(3)]
        writer.commit()
        seen, cursor = _read(reader, cursor)
        assert seen == set(after)


def test_a_rolled_back_file_is_never_read(warehouse):
    with warehouse.connect() as writer, warehouse.connect() as reader:
        cursor = cursor_now(reader, FILES)
        reader.commit()
        _add_file(writer, "rolled-back")
        seen, cursor = _read(reader, cursor)
        writer.rollback()
        kept = _add_file(writer, "kept")
        writer.commit()
        seen, cursor = _read(reader, cursor)
        assert seen == {kept}


def test_tables_of_an_earlier_version_get_the_column_once(warehouse):
    with warehouse.connect() as conn:
        conn.execute("alter table engagement.suppressions drop column xact_id")
        conn.commit()
    warehouse.ensure_schema()
    with warehouse.connect() as conn:
        (kind,) = conn.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = 'engagement.suppressions'::regclass and attname = 'xact_id'"
        ).fetchone()
        assert kind == "xid8"
        cursor = cursor_now(conn, "engagement.suppressions")
        conn.execute(
            "insert into engagement.suppressions (event_id, destination, person_token,"
            " event_type, effective_at) values (%s, 'sandbox', 'cursor-person',"
            " 'unsubscribe', now())",
            (f"cursor-{uuid.uuid4().hex}",),
        )
        conn.commit()
        rows, _ = read_since(conn, "engagement.suppressions", "person_token", cursor)
    assert rows == [("cursor-person",)]

"""A read worker's batch, encoded away from any connection, lands as the rows it encodes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.warehouse.copy_payload import binary_copy_payload
from connectors.warehouse.database import Warehouse

COLUMNS = "name text, blob bytea, n bigint, born date, seen timestamptz"
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
ROWS = st.lists(
    st.tuples(
        st.one_of(st.none(), TEXT),
        st.one_of(st.none(), st.binary(max_size=64)),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        st.one_of(st.none(), st.dates(date(1, 1, 1), date(9999, 12, 31))),
        st.one_of(
            st.none(),
            st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC)),
        ),
    ),
    max_size=30,
)


@pytest.fixture(scope="module")
def conn(warehouse: Warehouse):
    with warehouse.connect() as connection:
        connection.execute(f"create temp table payload_rows (row_no serial, {COLUMNS})")
        yield connection


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ROWS)
def test_a_payload_copies_in_as_its_rows(conn: psycopg.Connection, rows: list[tuple]) -> None:
    conn.execute("truncate payload_rows restart identity")
    (types,) = conn.execute(
        "select array_agg(atttypid::int order by attnum) from pg_attribute"
        " where attrelid = 'payload_rows'::regclass and attnum > 1"
    ).fetchone()
    payload = binary_copy_payload(rows, types)
    statement = "copy payload_rows (name, blob, n, born, seen) from stdin (format binary)"
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(payload)  # as the loader writes a worker's batch: whole, as it came
    back = conn.execute("select name, blob, n, born, seen from payload_rows order by row_no")
    assert back.fetchall() == rows

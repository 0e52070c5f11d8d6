"""Array literals round-trip through PostgreSQL exactly as psycopg's own list dumping does."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.warehouse.arrays import array_literal
from connectors.warehouse.database import Warehouse

# PostgreSQL text holds any character but NUL.
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


@pytest.fixture(scope="module")
def conn(warehouse: Warehouse):
    with warehouse.connect() as connection:
        yield connection


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=20))
def test_text_arrays_round_trip(conn: psycopg.Connection, values: list[str | None]) -> None:
    (back,) = conn.execute("select %s::text[]", (array_literal(values),)).fetchone()
    assert back == values


def test_edge_items_keep_their_text(conn: psycopg.Connection) -> None:
    values = ["NULL", "", " padded ", "{}", 'a"b', "c\\d", "e,f", None, "ünïcode"]
    (back,) = conn.execute("select %s::text[]", (array_literal(values),)).fetchone()
    assert back == values
    assert conn.execute("select cardinality(%s::text[])", (array_literal([]),)).fetchone() == (0,)


def test_dates_and_unnest_of_several_arrays(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "select p, d from unnest(%s::text[], %s::date[]) as t(p, d) order by p",
        (array_literal(["a", "b"]), array_literal([date(2026, 1, 31), None])),
    ).fetchall()
    assert rows == [("a", date(2026, 1, 31)), ("b", None)]

"""Rows committed since a reader last looked, in whatever order their writers committed.

A cursor on a sequence or a clock read at insert time misses rows: a load that took file_id
10 can commit after one that took 11 (files of different sources, or of two ingest runs,
load side by side), and a reader that moved its cursor to 11 in between never looks at 10
again. So the tables read this way (landing.source_files, engagement.suppressions) stamp
each row with its writer's transaction id (`xact_id xid8 default pg_current_xact_id()`),
and a reader keeps two things: the horizon below which every transaction had ended when it
last read (`pg_snapshot_xmin` of a snapshot taken first), and the transactions at or above
that horizon whose rows it has already seen. A transaction's rows become visible together,
so the seen set stays as small as the number of writers that were in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class CommitCursor:
    horizon: int  # every transaction with a lower id had ended when the reader last looked
    seen: frozenset[int]  # transactions at or above the horizon whose rows were read

    def as_json(self) -> dict[str, Any]:
        return {"horizon": str(self.horizon), "seen": sorted(str(x) for x in self.seen)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> CommitCursor:
        return cls(int(value["horizon"]), frozenset(int(x) for x in value["seen"]))


def _horizon(conn: psycopg.Connection) -> int:
    (horizon,) = conn.execute("select pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
    return int(horizon)


def cursor_now(conn: psycopg.Connection, table: str) -> CommitCursor:
    """A cursor after every row `table` holds now (what a first read starts from)."""
    horizon = _horizon(conn)
    seen = conn.execute(
        f"select distinct xact_id::text from {table} where xact_id >= %s::xid8", (str(horizon),)
    ).fetchall()
    return CommitCursor(horizon, frozenset(int(x) for (x,) in seen))


def read_since(
    conn: psycopg.Connection, table: str, columns: str, cursor: CommitCursor
) -> tuple[list[tuple], CommitCursor]:
    """`columns` of the rows of `table` committed since `cursor`, and the cursor after them.

    The horizon is taken before the rows are read: every transaction below it had ended, so
    the read sees all of their rows. Rows of a transaction at or above it are read when
    visible and remembered, so they are not read again.
    """
    horizon = max(_horizon(conn), cursor.horizon)
    rows = conn.execute(
        f"select xact_id::text, {columns} from {table} where xact_id >= %s::xid8",
        (str(cursor.horizon),),
    ).fetchall()
    new: list[tuple] = []
    seen: set[int] = set()
    for xact, *values in rows:
        xact_id = int(xact)
        if xact_id not in cursor.seen:
            new.append(tuple(values))
        if xact_id >= horizon:
            seen.add(xact_id)
    return new, CommitCursor(horizon, frozenset(seen))

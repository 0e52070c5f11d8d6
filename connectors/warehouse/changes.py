"""Change epochs: writers stamp what they change, so a sync reads only that.

A sync must notice every member whose payload inputs changed since its last run, without
reading every member's inputs again. Writers of those inputs (the loader's vault merge,
identity resolution's person mapping) stamp each row they write with the clock's current
epoch, and hold a shared lock on the clock until they commit. A sync advances the clock
under the exclusive lock, which it takes only when no writer is in flight, then looks for
rows stamped at or after the epoch its previous run started: every row stamped with an
older epoch was committed before that previous run read anything, and every row written
since carries the new epoch or a later one. A sync that finds a writer in flight does not
advance the clock: its next run looks back further, never less far. Counters, not clock
times: a wall clock that steps back could hide a write.
"""

from __future__ import annotations

import psycopg

CHANGE_LOCK = 7262007  # advisory lock class of the change clock (writers shared, syncs exclusive)


def writer_epoch(conn: psycopg.Connection) -> int:
    """The epoch to stamp this transaction's writes with; holds the clock's shared lock
    until the transaction ends, so no sync can advance past writes it has not seen."""
    conn.execute("select pg_advisory_xact_lock_shared(%s, 0)", (CHANGE_LOCK,))
    row = conn.execute("select epoch from activation.change_clock").fetchone()
    return row[0] if row else 0


def advance_clock(conn: psycopg.Connection) -> int | None:
    """Start a new epoch, in a transaction of its own; None when a writer is in flight (the
    caller then keeps looking from where it looked before)."""
    with conn.transaction():
        free = conn.execute("select pg_try_advisory_xact_lock(%s, 0)", (CHANGE_LOCK,)).fetchone()
        if not (free and free[0]):
            return None
        row = conn.execute(
            "update activation.change_clock set epoch = epoch + 1 returning epoch"
        ).fetchone()
    return row[0] if row else None

"""The members whose vault rows or person links were written since a sync's watermark, found
once and shared by the audience syncs of one pass.

Each audience sync looks for members whose payload inputs changed since its watermark (a
change epoch, connectors/warehouse/changes.py): vault rows stamped since, mapped to their
persons through person_xref, and persons whose links changed. At 1M patients, after 1% of
the people changed, that lookup costs about 0.25 s (15,000 index probes), the same for
every audience; ten audiences synced one after another paid it ten times.

A ChangeWindow is one clock advance shared by the syncs of a pass (services.sync
.sync_audiences). Its runs all record the epoch it advanced to as their next watermark, so
the members found for a watermark once, after the advance, serve every run of the window
that starts from the same watermark: a write committed later carries the window's epoch or
a newer one (a writer in flight during the advance would have stopped it), so the next
runs look for it again. Without a window, a sync advances the clock itself and looks on
its own, as a lone `hub sync` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from connectors.warehouse.changes import advance_clock

_FIND_TOUCHED = (
    "insert into sync_touched"
    " select %(since)s, %(columns)s::text[], x.person_token from vault.contact_fields v"
    " join landing.person_xref x on x.subject_token = v.subject_token"
    " where v.change_epoch >= %(since)s and v.column_name = any(%(columns)s)"
    " union select %(since)s, %(columns)s::text[], person_token from landing.person_changes"
    " where change_epoch >= %(since)s"
)


@dataclass
class ChangeWindow:
    """A clock advance shared by the syncs of one pass, on one connection (what it found
    lives in that session's temp table). `epoch` is None when a writer was in flight: the
    runs then keep their watermarks, and look back as far again next time."""

    epoch: int | None
    found: set[tuple[int | None, tuple[str, ...]]] = field(default_factory=set)


def open_window(conn: psycopg.Connection) -> ChangeWindow:
    """Advance the change clock for a pass of syncs on `conn`."""
    _create_table(conn)
    conn.execute("truncate sync_touched")
    conn.commit()
    return ChangeWindow(advance_clock(conn))


def find_touched(
    conn: psycopg.Connection, window: ChangeWindow | None, since: int | None, columns: list[str]
) -> None:
    """Make sync_touched hold the persons with `columns` vault rows or links written since
    `since`: found now, or earlier in the same window (no watermark: nobody; the run reads
    every member). Commits, so what the window remembers having found cannot be rolled
    back by a run failing later."""
    _create_table(conn)
    key = (since, tuple(columns))
    if since is None or (window is not None and key in window.found):
        return
    if window is None:
        conn.execute("truncate sync_touched")
    conn.execute(_FIND_TOUCHED, {"since": since, "columns": columns})
    conn.execute("analyze sync_touched")
    conn.commit()
    if window is not None:
        window.found.add(key)


def _create_table(conn: psycopg.Connection) -> None:
    conn.execute(
        "create temp table if not exists sync_touched"
        " (since bigint not null, columns text[] not null, person_token text not null)"
    )

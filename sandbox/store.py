"""SANDBOX engine state in SQLite, so audiences, members, idempotency records and the event
stream survive restarts of the sandbox.

One connection guarded by a lock: the sandbox serves a handful of test clients, and
serialising every transaction makes the idempotency check-then-apply atomic without any
cleverness. The database holds synthetic email addresses (the sandbox plays an email engine),
so the file and its folder are created owner-only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from sandbox.simulate import SimEvent

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audiences (
    audience_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    purpose TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- removed_at instead of DELETE: a member removed and added again must not be "sent" to a
-- second time, so the row (and the fact that the send was simulated) is kept.
CREATE TABLE IF NOT EXISTS members (
    audience_id TEXT NOT NULL REFERENCES audiences(audience_id),
    external_id TEXT NOT NULL,
    email TEXT NOT NULL,
    fields_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    removed_at TEXT,
    PRIMARY KEY (audience_id, external_id)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    response_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- AUTOINCREMENT: sequence numbers are never reused, even after rows are deleted, so an
-- event cursor handed out once stays meaningful forever.
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    external_id TEXT NOT NULL,
    audience_id TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    machine_open INTEGER NOT NULL,
    bounce_type TEXT,
    url TEXT
);
"""


class Store:
    """The sandbox's SQLite database; every method is safe to call from any thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE) below.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(_SCHEMA)
        self._conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (SCHEMA_VERSION,),
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and an IMMEDIATE transaction; commit on success, roll back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- meta ---------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # --- audiences ----------------------------------------------------------------------------

    @staticmethod
    def put_audience(
        conn: sqlite3.Connection, audience_id: str, name: str, purpose: str, now: str
    ) -> bool:
        """Create or update an audience; True when it was created."""
        cur = conn.execute(
            "UPDATE audiences SET name = ?, purpose = ?, updated_at = ? WHERE audience_id = ?",
            (name, purpose, now, audience_id),
        )
        if cur.rowcount:
            return False
        conn.execute(
            "INSERT INTO audiences(audience_id, name, purpose, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (audience_id, name, purpose, now, now),
        )
        return True

    @staticmethod
    def audience_exists(conn: sqlite3.Connection, audience_id: str) -> bool:
        row = conn.execute("SELECT 1 FROM audiences WHERE audience_id = ?", (audience_id,))
        return row.fetchone() is not None

    # --- idempotency --------------------------------------------------------------------------

    @staticmethod
    def idempotency_record(conn: sqlite3.Connection, key: str) -> tuple[str, str] | None:
        """(fingerprint, response_json) stored under `key`, if any."""
        row = conn.execute(
            "SELECT fingerprint, response_json FROM idempotency WHERE key = ?", (key,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    @staticmethod
    def save_idempotency(
        conn: sqlite3.Connection, key: str, fingerprint: str, response_json: str, now: str
    ) -> None:
        conn.execute(
            "INSERT INTO idempotency(key, fingerprint, response_json, created_at) "
            "VALUES (?, ?, ?, ?)",
            (key, fingerprint, response_json, now),
        )

    # --- members ------------------------------------------------------------------------------

    @staticmethod
    def upsert_member(
        conn: sqlite3.Connection,
        audience_id: str,
        external_id: str,
        email: str,
        fields_json: str,
        now: str,
    ) -> bool:
        """Insert or update (and un-remove) a member; True only on the very first insert."""
        cur = conn.execute(
            "UPDATE members SET email = ?, fields_json = ?, updated_at = ?, removed_at = NULL "
            "WHERE audience_id = ? AND external_id = ?",
            (email, fields_json, now, audience_id, external_id),
        )
        if cur.rowcount:
            return False
        conn.execute(
            "INSERT INTO members(audience_id, external_id, email, fields_json, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (audience_id, external_id, email, fields_json, now, now),
        )
        return True

    @staticmethod
    def upsert_members(
        conn: sqlite3.Connection,
        audience_id: str,
        rows: list[tuple[str, str, str]],
        now: str,
    ) -> list[bool]:
        """upsert_member for a whole batch of (external_id, email, fields_json), with a few
        statements instead of two per member; True where a member joined for the first time
        (a repeat within the batch is an update of the first)."""
        existing: set[str] = set()
        ids = list({external_id for external_id, _, _ in rows})
        for start in range(0, len(ids), 500):  # stay under SQLite's host-parameter limit
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            existing.update(
                r[0]
                for r in conn.execute(
                    f"SELECT external_id FROM members WHERE audience_id = ? "
                    f"AND external_id IN ({marks})",
                    (audience_id, *part),
                )
            )
        fresh: list[bool] = []
        inserts, updates = [], []
        for external_id, email, fields_json in rows:
            if external_id in existing:
                updates.append((email, fields_json, now, audience_id, external_id))
                fresh.append(False)
            else:
                existing.add(external_id)
                inserts.append((audience_id, external_id, email, fields_json, now, now))
                fresh.append(True)
        conn.executemany(
            "INSERT INTO members(audience_id, external_id, email, fields_json, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            inserts,
        )
        conn.executemany(
            "UPDATE members SET email = ?, fields_json = ?, updated_at = ?, removed_at = NULL "
            "WHERE audience_id = ? AND external_id = ?",
            updates,
        )
        return fresh

    @staticmethod
    def remove_member(
        conn: sqlite3.Connection, audience_id: str, external_id: str, now: str
    ) -> bool:
        """Mark a member removed; True when it was an active member."""
        cur = conn.execute(
            "UPDATE members SET removed_at = ?, updated_at = ? "
            "WHERE audience_id = ? AND external_id = ? AND removed_at IS NULL",
            (now, now, audience_id, external_id),
        )
        return cur.rowcount > 0

    @staticmethod
    def remove_members(
        conn: sqlite3.Connection, audience_id: str, external_ids: list[str], now: str
    ) -> None:
        """remove_member for a whole batch: one prepared statement run for every id, inside
        the caller's (one per request) transaction."""
        conn.executemany(
            "UPDATE members SET removed_at = ?, updated_at = ? "
            "WHERE audience_id = ? AND external_id = ? AND removed_at IS NULL",
            [(now, now, audience_id, external_id) for external_id in external_ids],
        )

    def member_ids(self, audience_id: str, after: str | None, limit: int) -> list[str]:
        """Active member ids in external_id order, strictly after `after`."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT external_id FROM members WHERE audience_id = ? AND removed_at IS NULL "
                "AND external_id > ? ORDER BY external_id LIMIT ?",
                (audience_id, after or "", limit),
            ).fetchall()
        return [r[0] for r in rows]

    # --- events -------------------------------------------------------------------------------

    @staticmethod
    def append_events(conn: sqlite3.Connection, events: list[SimEvent]) -> None:
        # A SimEvent is a tuple in the columns' order; machine_open goes as an int, which
        # SQLite binds directly (a bool takes its slower adaptation path).
        conn.executemany(
            "INSERT INTO events(event_id, type, external_id, audience_id, occurred_at, "
            "machine_open, bounce_type, url) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(*e[:5], int(e[5]), e[6], e[7]) for e in events],
        )

    def events_json_after(self, seq: int, limit: int) -> tuple[str, int]:
        """`events_after` as the JSON array `GET /v1/events` serves, and the last seq (`seq`
        itself on an empty page).

        SQLite builds the JSON itself: pages of tens of thousands of events would otherwise
        cost a tuple, an object and a dict per event in Python, the engine's bottleneck.
        Same ordering and visibility guarantees as `events_after`.
        """
        with self._lock:
            text, last = self._conn.execute(
                "SELECT json_group_array(json_object('event_id', event_id, 'type', type,"
                " 'external_id', external_id, 'audience_id', audience_id,"
                " 'occurred_at', occurred_at,"
                " 'machine_open', json(CASE WHEN machine_open THEN 'true' ELSE 'false' END),"
                " 'bounce_type', bounce_type, 'url', url)), max(seq)"
                " FROM (SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?)",
                (seq, limit),
            ).fetchone()
        return text, seq if last is None else last

    def events_after(self, seq: int, limit: int) -> list[tuple[int, SimEvent]]:
        """Up to `limit` events with a sequence number greater than `seq`, in order.

        Writers are serialised by the lock, so sequence numbers become visible in order: a
        reader can never pass a lower seq that commits later, and cursors never skip events.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, event_id, type, external_id, audience_id, occurred_at, "
                "machine_open, bounce_type, url FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [
            (r[0], SimEvent(r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8])) for r in rows
        ]

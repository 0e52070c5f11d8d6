"""State of the SMTP relay adapter: audiences, who was sent what, idempotency, events.

SQLite (WAL, one lock), shared by the adapter and its tracking endpoint. It holds no email
address and no personalization value: members are person tokens, messages are random
references with their Message-ID and link targets, events carry tokens and flags. That is
what lets tracking URLs and DSNs map back to people without anything identifying in them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audiences (
    audience_id TEXT PRIMARY KEY, name TEXT NOT NULL, purpose TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    audience_id TEXT NOT NULL, external_id TEXT NOT NULL, message_ref TEXT,
    removed_at TEXT, PRIMARY KEY (audience_id, external_id)
);
CREATE TABLE IF NOT EXISTS messages (
    message_ref TEXT PRIMARY KEY, message_id TEXT NOT NULL UNIQUE, audience_id TEXT NOT NULL,
    external_id TEXT NOT NULL, sent_at TEXT NOT NULL, links_json TEXT NOT NULL,
    notice_only INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, response_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    external_id TEXT NOT NULL, audience_id TEXT NOT NULL, occurred_at TEXT NOT NULL,
    machine_open INTEGER NOT NULL DEFAULT 0, bounce_type TEXT, url TEXT
);
"""


@dataclass(frozen=True, slots=True)
class SentMessage:
    message_ref: str
    message_id: str
    audience_id: str
    external_id: str
    sent_at: str
    links: list[str]
    notice_only: bool


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event_id: str
    type: str
    external_id: str
    audience_id: str
    occurred_at: str
    machine_open: bool
    bounce_type: str | None
    url: str | None


class SmtpState:
    """Thread-safe access to the adapter's SQLite state."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- audiences and members ------------------------------------------------------------

    def put_audience(self, audience_id: str, name: str, purpose: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO audiences VALUES (?, ?, ?) ON CONFLICT(audience_id) DO UPDATE"
                " SET name = excluded.name, purpose = excluded.purpose",
                (audience_id, name, purpose),
            )

    def audience_exists(self, audience_id: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM audiences WHERE audience_id = ?", (audience_id,)
            ).fetchone()
        return row is not None

    def member_message(self, audience_id: str, external_id: str) -> str | None:
        """The message_ref already sent to this member of this audience, if any."""
        with self._lock:
            row = self._conn.execute(
                "SELECT message_ref FROM members WHERE audience_id = ? AND external_id = ?",
                (audience_id, external_id),
            ).fetchone()
        return row[0] if row else None

    def keep_member(self, audience_id: str, external_id: str) -> None:
        """(Re)activate a member without sending (an update, or a re-add after removal)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO members (audience_id, external_id) VALUES (?, ?)"
                " ON CONFLICT(audience_id, external_id) DO UPDATE SET removed_at = NULL",
                (audience_id, external_id),
            )

    def record_send(self, message: SentMessage, event_id: str) -> None:
        """The relay accepted the message: member, message and `sent` event, atomically."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    message.message_ref,
                    message.message_id,
                    message.audience_id,
                    message.external_id,
                    message.sent_at,
                    orjson.dumps(message.links).decode(),
                    int(message.notice_only),
                ),
            )
            conn.execute(
                "INSERT INTO members (audience_id, external_id, message_ref) VALUES (?, ?, ?)"
                " ON CONFLICT(audience_id, external_id) DO UPDATE"
                " SET message_ref = excluded.message_ref, removed_at = NULL",
                (message.audience_id, message.external_id, message.message_ref),
            )
            self._append(
                conn,
                event_id,
                "sent",
                message.external_id,
                message.audience_id,
                message.sent_at,
            )

    def remove_member(self, audience_id: str, external_id: str, now: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE members SET removed_at = ? WHERE audience_id = ? AND external_id = ?"
                " AND removed_at IS NULL",
                (now, audience_id, external_id),
            )

    def member_ids(self, audience_id: str) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT external_id FROM members WHERE audience_id = ? AND removed_at IS NULL"
                " ORDER BY external_id",
                (audience_id,),
            ).fetchall()
        return [r[0] for r in rows]

    # --- messages ---------------------------------------------------------------------------

    def message(self, message_ref: str) -> SentMessage | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT message_ref, message_id, audience_id, external_id, sent_at, links_json,"
                " notice_only FROM messages WHERE message_ref = ?",
                (message_ref,),
            ).fetchone()
        return _message(row)

    def message_by_id(self, message_id: str) -> SentMessage | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT message_ref, message_id, audience_id, external_id, sent_at, links_json,"
                " notice_only FROM messages WHERE message_id = ?",
                (message_id,),
            ).fetchone()
        return _message(row)

    # --- idempotency ------------------------------------------------------------------------

    def idempotent(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT fingerprint, response_json FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def save_idempotent(self, key: str, fingerprint: str, response_json: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?)",
                (key, fingerprint, response_json),
            )

    # --- events -----------------------------------------------------------------------------

    def add_event(
        self,
        event_id: str,
        type_: str,
        external_id: str,
        audience_id: str,
        occurred_at: str,
        machine_open: bool = False,
        bounce_type: str | None = None,
        url: str | None = None,
    ) -> bool:
        """Append an event; False when an event with this id already exists."""
        with self.transaction() as conn:
            return self._append(
                conn,
                event_id,
                type_,
                external_id,
                audience_id,
                occurred_at,
                machine_open,
                bounce_type,
                url,
            )

    def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, event_id, type, external_id, audience_id, occurred_at,"
                " machine_open, bounce_type, url FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [StoredEvent(*r[:6], bool(r[6]), r[7], r[8]) for r in rows]

    @staticmethod
    def _append(
        conn: sqlite3.Connection,
        event_id: str,
        type_: str,
        external_id: str,
        audience_id: str,
        occurred_at: str,
        machine_open: bool = False,
        bounce_type: str | None = None,
        url: str | None = None,
    ) -> bool:
        cur = conn.execute(
            "INSERT OR IGNORE INTO events (event_id, type, external_id, audience_id,"
            " occurred_at, machine_open, bounce_type, url) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                type_,
                external_id,
                audience_id,
                occurred_at,
                int(machine_open),
                bounce_type,
                url,
            ),
        )
        return cur.rowcount > 0


def _message(row: tuple | None) -> SentMessage | None:
    if row is None:
        return None
    ref, message_id, audience_id, external_id, sent_at, links_json, notice_only = row
    links = orjson.loads(links_json)
    return SentMessage(ref, message_id, audience_id, external_id, sent_at, links, bool(notice_only))

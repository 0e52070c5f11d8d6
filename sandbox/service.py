"""SANDBOX engine operations behind the HTTP routes: validation, idempotency, members, events.

Kept free of HTTP so the rules of the contract (docs/engine-api.md) read in one place.
Every answer carries `"sandbox": true`. Error messages name fields, never their contents.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import orjson

from sandbox.delivery import DeliverySink
from sandbox.errors import ApiError
from sandbox.simulate import iso_utc, simulate_send
from sandbox.store import Store

MAX_BATCH = 1000
DEFAULT_PAGE = 100
MAX_PAGE = 1000
# Events are small and read in bulk: a consumer catching up pages through them by the
# tens of thousands per request (docs/engine-api.md).
MAX_EVENTS_PAGE = 50_000
MAX_FIELDS = 50
MAX_FIELD_VALUE = 1000

AUDIENCE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, no spaces
FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
# Pragmatic addr-spec check (dot-atom local part, LDH domain with at least one dot). Real
# engines are about this strict; anything fancier belongs to the CRM connector's validation.
EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
REJECTED = "ENGINE_REJECTED"


class Service:
    """The engine's operations over a Store, seeded for deterministic simulation."""

    def __init__(
        self,
        store: Store,
        seed: int,
        clock: Callable[[], dt.datetime],
        delivery: DeliverySink,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.seed = seed
        self.clock = clock
        self.delivery = delivery
        self.on_events = on_events  # webhook sender: new events were committed

    # --- audiences ----------------------------------------------------------------------------

    def put_audience(self, audience_id: str, payload: Any) -> dict[str, Any]:
        _check_audience_id(audience_id)
        if not isinstance(payload, dict):
            raise ApiError(400, "BAD_REQUEST", "body must be a JSON object")
        name, purpose = payload.get("name"), payload.get("purpose")
        for label, value in (("name", name), ("purpose", purpose)):
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise ApiError(400, "BAD_REQUEST", f"'{label}' must be a 1-200 character string")
        with self.store.transaction() as conn:
            created = Store.put_audience(conn, audience_id, name, purpose, self._now())
        return {"audience_id": audience_id, "name": name, "purpose": purpose, "created": created}

    # --- members ------------------------------------------------------------------------------

    def batch_upsert(
        self, audience_id: str, payload: Any, key: str | None, fingerprint: str
    ) -> tuple[dict[str, Any], bool]:
        """Apply (or replay) an upsert batch; returns (response, replayed)."""
        _check_audience_id(audience_id)
        members = _batch(payload, "members")
        sends: list[tuple[str, str, dict[str, str | None]]] = []

        def apply(conn: sqlite3.Connection) -> dict[str, Any]:
            now = self._now()
            results, valid = [], []
            for row in members:
                result, member = _validate_member(row)
                results.append(result)
                if member is not None:
                    valid.append(member)
            rows = [(e, email, orjson.dumps(f).decode()) for e, email, f in valid]
            fresh = Store.upsert_members(conn, audience_id, rows, now)
            events = []
            sent_at = self.clock()
            for (external_id, email, fields), first in zip(valid, fresh, strict=True):
                if first:
                    # First time this member joins this audience: simulate the campaign send.
                    events.extend(simulate_send(self.seed, audience_id, external_id, sent_at))
                    sends.append((external_id, email, fields))
            Store.append_events(conn, events)
            return {"results": results}

        response, replayed = self._idempotent(audience_id, key, fingerprint, apply)
        for external_id, email, fields in sends:  # after commit: a sink never sees a rollback
            self.delivery.deliver(audience_id, external_id, email, fields)
        if sends and self.on_events is not None:
            self.on_events()
        return response, replayed

    def batch_remove(
        self, audience_id: str, payload: Any, key: str | None, fingerprint: str
    ) -> tuple[dict[str, Any], bool]:
        """Remove (or replay a removal of) members; removing a non-member is still "ok"."""
        _check_audience_id(audience_id)
        external_ids = _batch(payload, "external_ids")

        def apply(conn: sqlite3.Connection) -> dict[str, Any]:
            results, valid = [], []
            for external_id in external_ids:
                if not _valid_external_id(external_id):
                    results.append(_result(external_id, REJECTED))
                    continue
                valid.append(external_id)
                results.append(_result(external_id, None))
            Store.remove_members(conn, audience_id, valid, self._now())
            return {"results": results}

        return self._idempotent(audience_id, key, fingerprint, apply)

    def list_members(
        self, audience_id: str, cursor: str | None, limit: str | None
    ) -> dict[str, Any]:
        _check_audience_id(audience_id)
        size = _limit(limit)
        after = _decode_cursor(cursor, "m1:") if cursor else None
        with self.store.transaction() as conn:
            if not Store.audience_exists(conn, audience_id):
                raise ApiError(404, "AUDIENCE_NOT_FOUND", "no such audience")
        ids = self.store.member_ids(audience_id, after, size + 1)  # one extra: is there more?
        more = len(ids) > size
        ids = ids[:size]
        next_cursor = _encode_cursor("m1:" + ids[-1]) if more else None
        return {"external_ids": ids, "next_cursor": next_cursor}

    # --- events -------------------------------------------------------------------------------

    def events(self, cursor: str | None, limit: str | None) -> dict[str, Any]:
        size = _limit(limit, MAX_EVENTS_PAGE)
        after = 0
        if cursor:
            raw = _decode_cursor(cursor, "e1:")
            if not raw.isdigit():
                raise ApiError(400, "BAD_CURSOR", "cursor is not one this engine issued")
            after = int(raw)
        events, last = self.store.events_json_after(after, size)
        return {
            # Already JSON (built by SQLite): embedded as is when the answer is serialised.
            "events": orjson.Fragment(events),
            # Always a cursor, even on an empty page: the consumer stores it and polls again.
            "next_cursor": _encode_cursor(f"e1:{last}"),
        }

    # --- helpers ------------------------------------------------------------------------------

    def _idempotent(
        self,
        audience_id: str,
        key: str | None,
        fingerprint: str,
        apply: Callable[[sqlite3.Connection], dict[str, Any]],
    ) -> tuple[dict[str, Any], bool]:
        if not key:
            raise ApiError(400, "IDEMPOTENCY_KEY_REQUIRED", "Idempotency-Key header is required")
        if not IDEMPOTENCY_KEY.fullmatch(key):
            raise ApiError(
                400, "BAD_IDEMPOTENCY_KEY", "Idempotency-Key must be 1-255 visible ASCII"
            )
        # Lookup, apply and record happen in one transaction: two concurrent requests with
        # the same key cannot both apply.
        with self.store.transaction() as conn:
            stored = Store.idempotency_record(conn, key)
            if stored is not None:
                if stored[0] != fingerprint:
                    raise ApiError(
                        409,
                        "IDEMPOTENCY_CONFLICT",
                        "Idempotency-Key was already used with a different request",
                    )
                return orjson.loads(stored[1]), True
            if not Store.audience_exists(conn, audience_id):
                raise ApiError(404, "AUDIENCE_NOT_FOUND", "no such audience; PUT it first")
            response = apply(conn)
            Store.save_idempotency(
                conn, key, fingerprint, orjson.dumps(response).decode(), self._now()
            )
        return response, False

    def _now(self) -> str:
        return iso_utc(self.clock())


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What an idempotency key is bound to: method, path (no query) and the exact body bytes."""
    return hashlib.sha256(f"{method.upper()} {path}\n".encode() + body).hexdigest()


def _check_audience_id(audience_id: str) -> None:
    if not AUDIENCE_ID.fullmatch(audience_id):
        raise ApiError(400, "BAD_AUDIENCE_ID", "audience_id must match [A-Za-z0-9._-]{1,64}")


def _batch(payload: Any, name: str) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get(name), list):
        raise ApiError(400, "BAD_REQUEST", f"body must be an object with a '{name}' list")
    rows = payload[name]
    if len(rows) > MAX_BATCH:
        raise ApiError(413, "BATCH_TOO_LARGE", f"at most {MAX_BATCH} entries per request")
    return rows


def _valid_external_id(value: Any) -> bool:
    # A printable string holds no whitespace but the ASCII space (every other kind is a
    # Unicode "Separator" or "Other"), so one substring test finishes the job; testing each
    # character with isspace() cost the engine about 15 µs a member.
    return (
        isinstance(value, str)
        and 0 < len(value) <= 256
        and value.isprintable()
        and " " not in value
    )


def _validate_member(
    row: Any,
) -> tuple[dict[str, Any], tuple[str, str, dict[str, str | None]] | None]:
    """The per-row result and, when accepted, the (external_id, email, fields) to store."""
    if not isinstance(row, dict):
        return _result(None, REJECTED), None
    external_id, email, fields = row.get("external_id"), row.get("email"), row.get("fields", {})
    if not _valid_external_id(external_id):
        return _result(external_id if isinstance(external_id, str) else None, REJECTED), None
    if not isinstance(email, str) or len(email) > 254 or not EMAIL.fullmatch(email):
        return _result(external_id, REJECTED), None
    if email.index("@") > 64 or not _valid_fields(fields):
        return _result(external_id, REJECTED), None
    return _result(external_id, None), (external_id, email, fields or {})


def _valid_fields(fields: Any) -> bool:
    if fields is None:
        return True
    if not isinstance(fields, dict) or len(fields) > MAX_FIELDS:
        return False
    return all(
        isinstance(k, str)
        and FIELD_NAME.fullmatch(k)
        and (v is None or (isinstance(v, str) and len(v) <= MAX_FIELD_VALUE))
        for k, v in fields.items()
    )


def _result(external_id: str | None, error_code: str | None) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "status": "rejected" if error_code else "ok",
        "error_code": error_code,
    }


def _limit(raw: str | None, most: int = MAX_PAGE) -> int:
    if raw in (None, ""):
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ApiError(400, "BAD_LIMIT", f"limit must be an integer from 1 to {most}")
    return int(raw)


def _encode_cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, prefix: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith(prefix):
        raise ApiError(400, "BAD_CURSOR", "cursor is not one this engine issued")
    return raw[len(prefix) :]

"""HTTP adapter for an email engine speaking the JSON API in docs/engine-api.md.

Security posture, none of it optional:
- https only: an http:// base URL is refused at construction; redirects are not followed
  (a redirect could downgrade the scheme or carry the Authorization header elsewhere).
- TLS verification always on: `verify=ca_file or True`; a refused certificate is raised at
  once as EngineTlsError, never retried.
- Every request carries the bearer token and a fresh X-Hub-Signature; writes carry the
  caller's Idempotency-Key, reused verbatim on every retry so a retried write applies once.
- Request and response bodies are never logged and never put into exception messages.

Retries: 5xx and connection errors back off exponentially with full jitter; 429 waits for
Retry-After. Both are bounded by `max_retries`, then EngineUnavailable / EngineRateLimited.

Throughput: one connection pool per thread, so a sync may push several batches at once
(`thread_safe`); `requests_per_second` caps the request rate of every thread together
(a token bucket per destination), below the engine's published quota.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import requests

from connectors.email.base import (
    MAX_BATCH,
    EmailEngine,
    EngineEvent,
    EventPage,
    Member,
    MemberResult,
    batched,
)
from connectors.email.errors import (
    EngineAuthError,
    EngineBatchTooLarge,
    EngineIdempotencyConflict,
    EngineProtocolError,
    EngineRateLimited,
    EngineRequestError,
    EngineTlsError,
    EngineUnavailable,
)
from connectors.email.events import EventRow, RowPage
from connectors.email.ratelimit import TokenBucket
from connectors.email.signing import SIGNATURE_HEADER, signature_header
from connectors.http_common import certificate_refused, parse_retry_after
from domain.reasons import REASONS

__all__ = ["HttpEngine", "batched"]

log = logging.getLogger(__name__)

USER_AGENT = "audience-hub-engine-client/1"
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_ERROR_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")  # only codes are echoed, never engine text
# Raised by requests/urllib3 when the connection drops mid-answer: as transient as a 503.
_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class HttpEngine(EmailEngine):
    """EmailEngine over HTTPS + JSON, with signing, idempotency keys and bounded retries.

    Safe to share between threads: each thread gets its own requests.Session (a connection
    pool; Session is not documented as thread-safe) unless a session is passed in, in which
    case `thread_safe` is False and the caller keeps to one thread.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        signing_secret: str,
        ca_file: str | None = None,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        *,
        backoff_max: float = 30.0,
        max_retry_after: float = 60.0,
        trust_env: bool = False,
        requests_per_second: float | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        scheme = parts.scheme.lower()
        if scheme == "http":
            raise ValueError(
                "refusing a plaintext http:// engine URL: the engine API is only ever "
                "spoken over https://"
            )
        if scheme != "https" or not parts.hostname:
            raise ValueError("engine base_url must be an absolute https:// URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("engine base_url must not carry credentials, a query or a fragment")
        if not token or not signing_secret:
            raise ValueError("engine token and signing secret are required")
        if max_retries < 0 or timeout <= 0 or backoff_base < 0:
            raise ValueError("timeout must be > 0, max_retries and backoff_base >= 0")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._secret = signing_secret
        # A CA file pins trust to the engine's private CA; None means the default store.
        # There is deliberately no way to pass verify=False.
        self._verify: str | bool = ca_file or True
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        # trust_env=False by default: no netrc credentials, no env proxy, and no
        # REQUESTS_CA_BUNDLE silently replacing the trust decision made here.
        self._trust_env = trust_env
        self._shared_session = session
        if session is not None:
            session.trust_env = trust_env
        self.thread_safe = session is None
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._bucket = TokenBucket(requests_per_second) if requests_per_second else None
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._sandbox_noted = False

    def __repr__(self) -> str:  # never the token or secret
        return f"HttpEngine({self.base_url!r})"

    def close(self) -> None:
        if self._shared_session is not None:
            self._shared_session.close()
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    @property
    def _session(self) -> requests.Session:
        """This thread's session (connection pool)."""
        if self._shared_session is not None:
            return self._shared_session
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = self._trust_env
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    # --- EmailEngine ----------------------------------------------------------------------

    def ensure_audience(self, audience_id: str, name: str, purpose: str) -> None:
        self._request(
            "ensure_audience",
            "PUT",
            f"/v1/audiences/{_seg(audience_id)}",
            payload={"name": name, "purpose": purpose},
        )

    def upsert(
        self, audience_id: str, members: list[Member], idempotency_key: str
    ) -> list[MemberResult]:
        _check_batch(len(members), "upsert")
        data = self._request(
            "upsert",
            "POST",
            f"/v1/audiences/{_seg(audience_id)}/members:batchUpsert",
            payload={
                "members": [
                    {"external_id": m.external_id, "email": m.email, "fields": m.fields}
                    for m in members
                ]
            },
            idempotency_key=idempotency_key,
        )
        return _results("upsert", data, [m.external_id for m in members])

    def remove(
        self, audience_id: str, external_ids: list[str], idempotency_key: str
    ) -> list[MemberResult]:
        _check_batch(len(external_ids), "remove")
        data = self._request(
            "remove",
            "POST",
            f"/v1/audiences/{_seg(audience_id)}/members:batchRemove",
            payload={"external_ids": list(external_ids)},
            idempotency_key=idempotency_key,
        )
        return _results("remove", data, list(external_ids))

    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        params: dict[str, str] = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        data = self._request("events", "GET", "/v1/events", params=params)
        rows, next_cursor = data.get("events"), data.get("next_cursor")
        if not isinstance(rows, list) or not isinstance(next_cursor, str):
            raise EngineProtocolError("events: answer lacks an events list or next_cursor")
        return EventPage([_event(row) for row in rows], next_cursor)

    # Largest events page to ask for; lowered to LEGACY_EVENTS_PAGE for an engine that
    # refuses more (engines written to the earlier 1-1000 page contract).
    _events_page_cap = 50_000

    def event_rows(self, cursor: str | None, limit: int = 20_000) -> RowPage:
        """`events` as rows for bulk readback (services.feedback): the same request and
        contract checks, without an EngineEvent per event. Events without an external id
        are counted as unmapped and dropped (never keyed on anything else)."""
        limit = min(limit, self._events_page_cap)
        params: dict[str, str] = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        try:
            data = self._request("events", "GET", "/v1/events", params=params)
        except EngineRequestError as exc:
            if exc.status != 400 or limit <= LEGACY_EVENTS_PAGE:
                raise
            page = self.event_rows(cursor, LEGACY_EVENTS_PAGE)  # raises if not the limit
            self._events_page_cap = LEGACY_EVENTS_PAGE
            return page
        rows, next_cursor = data.get("events"), data.get("next_cursor")
        if not isinstance(rows, list) or not isinstance(next_cursor, str):
            raise EngineProtocolError("events: answer lacks an events list or next_cursor")
        mapped, unmapped = _event_rows(rows)
        return RowPage(mapped, next_cursor, len(rows), unmapped)

    # --- extras (not part of EmailEngine) -------------------------------------------------

    def list_member_ids(self, audience_id: str, page_size: int = 1000) -> list[str]:
        """All current member ids of an audience (reconciliation and tests)."""
        ids: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": str(page_size), **({"cursor": cursor} if cursor else {})}
            data = self._request(
                "list_members", "GET", f"/v1/audiences/{_seg(audience_id)}/members", params=params
            )
            page, cursor = data.get("external_ids"), data.get("next_cursor")
            if not isinstance(page, list) or not all(isinstance(i, str) for i in page):
                raise EngineProtocolError("list_members: answer lacks an external_ids list")
            ids.extend(page)
            if not cursor:
                return ids

    # --- transport ------------------------------------------------------------------------

    def _request(
        self,
        op: str,
        method: str,
        path: str,
        *,
        payload: Any = None,
        params: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise ValueError("idempotency_key must be 1-255 visible ASCII characters")
        body = orjson.dumps(payload) if payload is not None else b""
        attempts = self.max_retries + 1
        last, status, rate_limited = "no attempt", None, False
        for attempt in range(attempts):
            delay: float | None = None
            try:
                resp = self._send(method, path, body, params, idempotency_key)
            except requests.exceptions.SSLError as exc:
                if certificate_refused(exc):
                    raise EngineTlsError(
                        f"{op}: the engine's TLS certificate was not trusted (check ca_file)"
                    ) from None  # the chained text would only repeat the URL
                last, status, rate_limited = "TLS error", None, False
            except _TRANSIENT as exc:
                last, status, rate_limited = type(exc).__name__, None, False
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    return self._json(op, resp)
                if status == 429 or status >= 500:
                    rate_limited = status == 429
                    last = f"HTTP {status}"
                    delay = self._retry_after(op, resp, rate_limited)
                    resp.close()
                else:
                    raise _client_error(op, resp)
            log.warning("engine %s: %s (attempt %d of %d)", op, last, attempt + 1, attempts)
            if attempt + 1 < attempts:
                self._sleep(self._backoff(attempt) if delay is None else delay)
        error = EngineRateLimited if rate_limited else EngineUnavailable
        raise error(f"{op}: engine unavailable after {attempts} attempts ({last})", status=status)

    def _send(
        self,
        method: str,
        path: str,
        body: bytes,
        params: dict[str, str] | None,
        idempotency_key: str | None,
    ) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if body:
            headers["Content-Type"] = "application/json"
        if self._bucket is not None:
            self._bucket.acquire()
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        request = requests.Request(
            method, self.base_url + path, params=params, data=body, headers=headers
        )
        prepared = self._session.prepare_request(request)
        # Sign what goes on the wire (path_url = encoded path + query), re-signed per attempt
        # so a long backoff never sends a stale timestamp.
        prepared.headers[SIGNATURE_HEADER] = signature_header(
            self._secret, method, prepared.path_url, body, int(self._clock())
        )
        return self._session.send(
            prepared, timeout=self.timeout, verify=self._verify, allow_redirects=False
        )

    def _json(self, op: str, resp: requests.Response) -> dict[str, Any]:
        if resp.headers.get("X-Sandbox") == "true" and not self._sandbox_noted:
            self._sandbox_noted = True
            log.warning("engine at %s identifies itself as a SANDBOX", self.base_url)
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise EngineProtocolError(
                f"{op}: engine answered {resp.status_code} with a body that is not JSON",
                status=resp.status_code,
            ) from None
        if not isinstance(data, dict):
            raise EngineProtocolError(f"{op}: engine answer is not a JSON object")
        return data

    def _retry_after(self, op: str, resp: requests.Response, rate_limited: bool) -> float | None:
        """Seconds the engine asked us to wait, or None to use our own backoff."""
        seconds = parse_retry_after(resp.headers.get("Retry-After"), self._clock())
        if seconds is not None and seconds > self.max_retry_after:
            # Blocking that long would stall the run; give up now and let the caller defer.
            error = EngineRateLimited if rate_limited else EngineUnavailable
            raise error(
                f"{op}: engine asked to retry after {seconds:.0f} s (limit "
                f"{self.max_retry_after:.0f} s)",
                status=resp.status_code,
            )
        return seconds

    def _backoff(self, attempt: int) -> float:
        # Full jitter (uniform over [0, cap]) spreads out clients that failed together.
        return self._rng.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))


def _seg(value: str) -> str:
    return quote(value, safe="")


def _check_batch(size: int, op: str) -> None:
    if size > MAX_BATCH:
        raise EngineBatchTooLarge(f"{op}: {size} entries; at most {MAX_BATCH} per request")


def _client_error(op: str, resp: requests.Response) -> Exception:
    status = resp.status_code
    code = None
    try:
        data = orjson.loads(resp.content)
        raw = data.get("error", {}).get("code") if isinstance(data, dict) else None
        code = raw if isinstance(raw, str) and _ERROR_CODE.fullmatch(raw) else None
    except (orjson.JSONDecodeError, AttributeError):
        pass
    message = f"{op}: engine answered HTTP {status}" + (f" ({code})" if code else "")
    if status in (401, 403):
        return EngineAuthError(message, status=status)
    if status == 409:
        return EngineIdempotencyConflict(message, status=status)
    if status == 413:
        return EngineBatchTooLarge(message, status=status)
    if 300 <= status < 400:
        return EngineProtocolError(f"{message}; redirects are not followed", status=status)
    return EngineRequestError(message, status=status)


def _results(op: str, data: dict[str, Any], sent: list[str]) -> list[MemberResult]:
    rows = data.get("results")
    if not isinstance(rows, list) or len(rows) != len(sent):
        raise EngineProtocolError(f"{op}: expected {len(sent)} results from the engine")
    results = []
    for row, external_id in zip(rows, sent, strict=True):
        if not isinstance(row, dict) or row.get("external_id") != external_id:
            raise EngineProtocolError(f"{op}: results do not match the request order")
        status = row.get("status")
        if status == "ok":
            results.append(MemberResult(external_id, "ok", None))
        elif status == "rejected":
            code = row.get("error_code")
            # Keep warehouse codes inside the catalogue; vendor-specific codes fold into one.
            code = code if isinstance(code, str) and code in REASONS else "ENGINE_REJECTED"
            results.append(MemberResult(external_id, "rejected", code))
        else:
            raise EngineProtocolError(f"{op}: unknown member status in engine answer")
    return results


def _event(row: Any) -> EngineEvent:
    try:
        occurred = dt.datetime.fromisoformat(row["occurred_at"])
        if occurred.tzinfo is None:
            raise ValueError("naive timestamp")
        bounce = row.get("bounce_type")
        if bounce not in (None, "hard", "soft"):
            raise ValueError("bounce_type")
        return EngineEvent(
            event_id=str(row["event_id"]),
            type=str(row["type"]),
            external_id=str(row["external_id"]),
            audience_id=str(row["audience_id"]),
            occurred_at=occurred.astimezone(dt.UTC),
            machine_open=bool(row.get("machine_open", False)),
            bounce_type=bounce,
            url=row.get("url") if isinstance(row.get("url"), str) else None,
        )
    except (KeyError, TypeError, ValueError):
        raise EngineProtocolError("events: an event does not follow the contract") from None


LEGACY_EVENTS_PAGE = 1000
_BOUNCE_TYPES = frozenset((None, "hard", "soft"))


def _event_rows(rows: list[Any]) -> tuple[list[EventRow], int]:
    """Contract-checked rows (as `_event` checks them) and the count without an external id.

    One tight loop and a tuple per event: at tens of thousands of events per page the
    per-event Python is what bounds readback. occurred_at stays the engine's ISO text
    (PostgreSQL parses it on COPY) once Python has checked it parses and has an offset.
    """
    out: list[EventRow] = []
    append, parse = out.append, dt.datetime.fromisoformat
    unmapped = 0
    try:
        for row in rows:
            person = row.get("external_id")
            if not person:
                unmapped += 1
                continue
            when = row["occurred_at"]
            if parse(when).tzinfo is None:
                raise ValueError("naive timestamp")
            bounce = row.get("bounce_type")
            if bounce not in _BOUNCE_TYPES:
                raise ValueError("bounce_type")
            append(
                (
                    str(row["event_id"]),
                    str(row.get("audience_id") or "") or None,
                    str(person),
                    str(row["type"]),
                    when,
                    bool(row.get("machine_open", False)),
                    bounce,
                )
            )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise EngineProtocolError("events: an event does not follow the contract") from None
    return out, unmapped

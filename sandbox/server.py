"""SANDBOX engine HTTP layer: a threading HTTPS server and the JSON request handler.

Order of checks per request: read the body (bounded) -> health shortcut -> bearer token and
signature (401) -> route (404/405) -> rate limit (429) -> injected fault (503) -> service.
Every answer is JSON with `"sandbox": true` and an `X-Sandbox: true` header, and the Server
header says SANDBOX. Request bodies are never logged: log lines carry method, path, status.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from sandbox.auth import verify_request
from sandbox.errors import ApiError
from sandbox.faults import FaultInjector, RateLimiter
from sandbox.service import Service, fingerprint

log = logging.getLogger("sandbox.engine")

MAX_BODY_BYTES = 8 * 1024 * 1024  # 1000 members with generous fields fit with room to spare
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0

_AUDIENCE = r"/v1/audiences/(?P<audience_id>[^/]+)"
_ROUTES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(_AUDIENCE), "PUT", "put_audience"),
    (re.compile(_AUDIENCE + r"/members:batchUpsert"), "POST", "batch_upsert"),
    (re.compile(_AUDIENCE + r"/members:batchRemove"), "POST", "batch_remove"),
    (re.compile(_AUDIENCE + r"/members"), "GET", "list_members"),
    (re.compile(r"/v1/events"), "GET", "events"),
]


@dataclass
class EngineConfig:
    """What the handler needs from the engine: operations, credentials and fault knobs."""

    service: Service
    token: str
    signing_secret: str
    faults: FaultInjector
    limiter: RateLimiter
    wall_clock: Callable[[], float] = field(default=time.time)


class SandboxHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that does the TLS handshake in the worker thread.

    Wrapping the listening socket would run handshakes in the accept loop, where one slow or
    hostile client stalls everyone; here each connection is wrapped by its own thread.
    """

    daemon_threads = False  # stop() joins workers so the database is not closed under them
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], ssl_context: ssl.SSLContext, config: EngineConfig
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.ssl_context = ssl_context
        self.config = config
        self._live: set[ssl.SSLSocket] = set()
        self._live_lock = threading.Lock()
        super().__init__(address, SandboxHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        # Headers and body go out as two writes; without NODELAY, Nagle plus the client's
        # delayed ACK stalls every keep-alive answer by ~40 ms.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            # Expected when a client does not trust the sandbox CA: it aborts the handshake.
            log.info("SANDBOX tls handshake failed from %s: %s", client_address[0], _why(exc))
            return
        with self._live_lock:
            self._live.add(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with self._live_lock:
                self._live.discard(conn)
            conn.close()

    def close_connections(self) -> None:
        """Shut down idle keep-alive connections so their worker threads end promptly."""
        with self._live_lock:
            live = list(self._live)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class SandboxHandler(BaseHTTPRequestHandler):
    """One JSON request of the sandbox engine API (docs/engine-api.md)."""

    server_version = "audience-hub-SANDBOX-engine/1"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # keep-alive, so every answer sets Content-Length
    timeout = IDLE_TIMEOUT
    server: SandboxHTTPServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        headers: dict[str, str] = {}
        try:
            status, payload, headers = self._dispatch(method)
        except ApiError as err:
            status, payload, headers = err.status, _error(err.code, err.message), err.headers
            if err.close:
                self.close_connection = True
        except Exception:
            log.exception("SANDBOX engine: unhandled error on %s", method)
            status, payload = 500, _error("INTERNAL", "internal sandbox error")
        self._send(status, payload, headers)

    def _dispatch(self, method: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        cfg = self.server.config
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        body = self._read_body()
        if path == "/v1/health":
            return 200, {"status": "ok"}, {}

        # The signature covers the request target exactly as sent (self.path), query included.
        verify_request(
            self.headers,
            method,
            self.path,
            body,
            token=cfg.token,
            secret=cfg.signing_secret,
            now=cfg.wall_clock(),
        )
        route = _route(method, path)
        retry_after = cfg.limiter.check()
        if retry_after is not None:
            raise ApiError(
                429, "RATE_LIMITED", "rate limit exceeded", {"Retry-After": str(retry_after)}
            )
        fault = cfg.faults.decide()
        if fault == "before" or (fault == "after" and method == "GET"):
            raise ApiError(503, "UNAVAILABLE", "injected transient failure (sandbox)")

        name, audience_id = route
        svc = cfg.service
        headers: dict[str, str] = {}
        if name == "events":
            result = svc.events(query.get("cursor"), query.get("limit"))
        elif name == "list_members":
            result = svc.list_members(audience_id, query.get("cursor"), query.get("limit"))
        elif name == "put_audience":
            result = svc.put_audience(audience_id, _json(body))
        else:
            operation = svc.batch_upsert if name == "batch_upsert" else svc.batch_remove
            key = self.headers.get("Idempotency-Key")
            result, replayed = operation(
                audience_id, _json(body), key, fingerprint(method, split.path, body)
            )
            if replayed:
                headers["Idempotent-Replayed"] = "true"
        if fault == "after":
            # Committed, but the answer is "lost": the client must retry with the same key.
            log.info("SANDBOX fault: dropping the answer to an applied %s %s", method, path)
            raise ApiError(503, "UNAVAILABLE", "injected transient failure (sandbox)")
        return 200, result, headers

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "LENGTH_REQUIRED", "send Content-Length, not chunked", close=True)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.strip().isdigit():
            raise ApiError(400, "BAD_REQUEST", "invalid Content-Length", close=True)
        length = int(raw)
        if length > MAX_BODY_BYTES:
            raise ApiError(413, "BODY_TOO_LARGE", "request body too large", close=True)
        body = self.rfile.read(length)
        if len(body) != length:
            raise ApiError(400, "BAD_REQUEST", "request body shorter than declared", close=True)
        return body

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        data = orjson.dumps({**payload, "sandbox": True})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Sandbox", "true")
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def version_string(self) -> str:
        return self.server_version  # no Python version: nothing to fingerprint, SANDBOX label only

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds method, path and query (ids, cursors), never a body.
        log.info("SANDBOX %s %s", self.address_string(), format % args)


def _route(method: str, path: str) -> tuple[str, str]:
    allowed = False
    for pattern, route_method, name in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            if route_method == method:
                return name, match.groupdict().get("audience_id", "")
            allowed = True
    if allowed:
        raise ApiError(405, "METHOD_NOT_ALLOWED", "method not allowed on this path")
    raise ApiError(404, "NOT_FOUND", "no such endpoint")


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "BAD_JSON", "body is not valid JSON") from None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}({reason})" if reason else type(exc).__name__


def make_ssl_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """Server-side TLS: 1.2 minimum, the sandbox certificate, no client certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx

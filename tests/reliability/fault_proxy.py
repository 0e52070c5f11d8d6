"""An HTTPS proxy on loopback that stands between the hub and an engine and misbehaves on cue.

The SANDBOX engine injects its own 503s and 429s; this proxy adds the failures an engine's
network path produces: a 500, a 429 with Retry-After, an answer that comes slowly, one that
never comes (the client's timeout fires), a connection dropped without an answer, and all of
them either before the engine applied a write or after (applied, answer lost). Requests are
forwarded byte for byte, so the engine still checks the client's token and signature.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

FAULTS = (
    "500_before",
    "500_after",
    "429",
    "slow",
    "silent_before",
    "silent_after",
    "drop_before",
    "drop_after",
)
_FORWARDED = ("Authorization", "X-Hub-Signature", "Idempotency-Key", "Content-Type", "Accept")


def rotating_plan(every: int, faults: tuple[str, ...] = FAULTS) -> Callable[[str], str]:
    """Every `every`-th request fails, cycling through `faults` in order: each kind occurs."""
    lock = threading.Lock()
    seen = [0]

    def plan(method: str) -> str:
        with lock:
            seen[0] += 1
            n = seen[0]
        return faults[(n // every) % len(faults)] if n % every == 0 else "pass"

    return plan


def random_plan(rate: float, seed: int, faults: tuple[str, ...] = FAULTS) -> Callable[[str], str]:
    """Each request fails with probability `rate`, the fault drawn from `faults` (seeded)."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def plan(method: str) -> str:
        with lock:
            return rng.choice(faults) if rng.random() < rate else "pass"

    return plan


class FaultProxy:
    """Serve https://127.0.0.1:<port> in front of `upstream_url` with the engine's own cert."""

    def __init__(
        self,
        upstream_url: str,
        ca_file: str,
        cert_file: str,
        key_file: str,
        plan: Callable[[str], str],
        slow_seconds: float = 0.3,
        silent_seconds: float = 1.5,
    ) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.plan = plan
        self.slow_seconds = slow_seconds
        self.silent_seconds = silent_seconds  # longer than the client's timeout
        self.down = False  # refuse every request (the engine is gone)
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._ca_file = ca_file
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server = _Server(("127.0.0.1", 0), _Handler, context, self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.base_url = f"https://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> str:
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, fault: str) -> None:
        with self._lock:
            self.injected[fault] += 1

    def forward(self, method: str, path: str, headers: Any, body: bytes) -> requests.Response:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False
        with self._lock:
            self.forwarded += 1
        return session.request(
            method,
            self.upstream_url + path,
            data=body,
            headers={k: headers[k] for k in _FORWARDED if headers.get(k) is not None},
            verify=self._ca_file,
            timeout=30,
            allow_redirects=False,
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, context: ssl.SSLContext, proxy: FaultProxy) -> None:
        self.context = context
        self.proxy = proxy
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._proxy("GET")

    def do_PUT(self) -> None:
        self._proxy("PUT")

    def do_POST(self) -> None:
        self._proxy("POST")

    def _proxy(self, method: str) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if proxy.down:
            proxy.count("down")
            self._drop()
            return
        fault = proxy.plan(method)
        if fault != "pass":
            proxy.count(fault)
        if fault == "500_before":
            self._answer(500, b'{"error": {"code": "INTERNAL", "message": "injected"}}')
            return
        if fault == "429":
            self._answer(429, b'{"error": {"code": "RATE_LIMITED"}}', {"Retry-After": "0"})
            return
        if fault == "silent_before":
            time.sleep(proxy.silent_seconds)
            self._drop()
            return
        if fault == "drop_before":
            self._drop()
            return
        if fault == "slow":
            time.sleep(proxy.slow_seconds)
        answer = proxy.forward(method, self.path, self.headers, body)
        if fault == "500_after":
            self._answer(500, b'{"error": {"code": "INTERNAL", "message": "injected"}}')
        elif fault == "silent_after":
            time.sleep(proxy.silent_seconds)
            self._drop()
        elif fault == "drop_after":
            self._drop()
        else:
            self._answer(answer.status_code, answer.content, _passed_headers(answer))

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        # No answer at all: the client sees the connection close (or its own timeout first).
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _passed_headers(answer: requests.Response) -> dict[str, str]:
    return {
        name: answer.headers[name]
        for name in ("Retry-After", "X-Sandbox", "Idempotent-Replayed")
        if name in answer.headers
    }

"""A small threaded HTTPS server for the hub's own endpoints (webhook receiver, tracking).

TLS 1.2+ only, handshakes in the worker threads (a slow client never stalls the accept
loop), loopback unless told otherwise, bounded request bodies, and log lines that carry the
method, the path without its query and the status - never a body or a token.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path plus ?query, as sent
    headers: Any  # email.message.Message: case-insensitive .get()
    body: bytes
    client: str

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


class HttpsServer:
    """Serve `handler` over HTTPS from a background thread: `with HttpsServer(...) as s:`."""

    def __init__(
        self,
        handler: Handler,
        cert_path: str,
        key_path: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "hub-https",
        allow_non_loopback: bool = False,
    ) -> None:
        if not allow_non_loopback and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{name} binds to loopback only unless allow_non_loopback=True")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_path, key_path)
        self.name = name
        self._server = _Server((host, port), context, handler, name)
        self._thread: threading.Thread | None = None
        port = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"https://{shown}:{port}"

    def start(self) -> str:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=self.name
        )
        self._thread.daemon = True
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> HttpsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        context: ssl.SSLContext,
        handler: Handler,
        name: str,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.context, self.handler, self.name = context, handler, name
        super().__init__(address, _RequestHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            log.info("%s: TLS handshake failed from %s", self.name, client_address[0])
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "audience-hub"
    sys_version = ""
    timeout = 30
    server: _Server

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        length = self.headers.get("Content-Length", "0")
        if self.headers.get("Transfer-Encoding") or not length.isdigit():
            self._reply(Response(411, b'{"error": "send Content-Length"}'), close=True)
            return
        if int(length) > MAX_BODY_BYTES:
            self._reply(Response(413, b'{"error": "body too large"}'), close=True)
            return
        body = self.rfile.read(int(length))
        request = Request(method, self.path, self.headers, body, self.client_address[0])
        try:
            response = self.server.handler(request)
        except Exception:
            log.exception("%s: handler failed on %s %s", self.server.name, method, request.path)
            response = Response(500, b'{"error": "internal error"}')
        self._reply(response, head=method == "HEAD")

    def _reply(self, response: Response, close: bool = False, head: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in response.headers.items():
            self.send_header(name, value)
        if close:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def version_string(self) -> str:
        return self.server_version

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The path without its query: tracking tokens and cursors stay out of the log.
        path = self.path.split("?", 1)[0]
        if path.count("/") >= 2:
            path = path.rsplit("/", 1)[0] + "/..."
        log.info("%s %s %s %s", self.server.name, self.command, path, code)

"""SANDBOX email engine: a local HTTPS JSON API that stands in for a real email engine.

Never the production path. It exists so the HTTP adapter (connectors/email/http_api.py) can be
exercised end to end - real TLS, real signatures, idempotency, retries, the event stream -
without sending anything anywhere. Contract: docs/engine-api.md.

    with SandboxEngine(tmp_path, token="t", signing_secret="s") as engine:
        engine.base_url, engine.ca_cert_path

As a process: `python -m sandbox --state-dir DIR --port N` (see sandbox/__main__.py), or
`serve(...)` from another CLI.

Layout of state_dir: engine.sqlite3 (state), tls/ (local CA + server cert), credentials.json
(token and signing secret when not given explicitly; 0600), endpoint.json (written while
running: base_url and CA path, for other processes to find a port-0 server).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from sandbox.delivery import DeliverySink, NoDelivery
from sandbox.faults import FaultInjector, RateLimiter
from sandbox.server import EngineConfig, SandboxHTTPServer, make_ssl_context
from sandbox.service import Service
from sandbox.store import Store
from sandbox.tls import TlsMaterial, ensure_local_ca
from sandbox.webhooks import WebhookSender

log = logging.getLogger("sandbox.engine")

DB_FILE = "engine.sqlite3"
CREDENTIALS_FILE = "credentials.json"
ENDPOINT_FILE = "endpoint.json"


class SandboxEngine:
    """The SANDBOX engine, served from a background thread."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 7,
        *,
        token: str | None = None,
        signing_secret: str | None = None,
        fail_rate: float = 0.0,
        rate_limit: int | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        delivery: DeliverySink | None = None,
        allow_non_loopback: bool = False,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_ca_file: str | None = None,
    ) -> None:
        if not allow_non_loopback and not _is_loopback(host):
            # The sandbox stores (synthetic) addresses and its CA is throwaway: keep it local.
            raise ValueError("SANDBOX engine binds to loopback only (allow_non_loopback=True)")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host, self.port, self.seed = host, port, seed
        if token is None or signing_secret is None:
            stored = _load_or_create_credentials(self.state_dir / CREDENTIALS_FILE)
            token = token or stored["token"]
            signing_secret = signing_secret or stored["signing_secret"]
        self.token: str = token
        self.signing_secret: str = signing_secret
        self.fail_rate, self.rate_limit = fail_rate, rate_limit
        # Validate the fault knobs now, not at start(): a typo should fail at construction.
        FaultInjector(fail_rate, seed)
        RateLimiter(rate_limit)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._delivery = delivery or NoDelivery()
        if webhook_url and not webhook_secret:
            raise ValueError("SANDBOX webhooks need a signing secret")
        self.webhook_url, self._webhook_secret = webhook_url, webhook_secret
        self.webhook_ca_file = webhook_ca_file
        self.webhooks: WebhookSender | None = None
        self.tls: TlsMaterial = ensure_local_ca(self.state_dir / "tls")
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self.base_url: str | None = None

    @property
    def ca_cert_path(self) -> Path:
        """The CA file clients must pass as `ca_file` to trust this sandbox."""
        return self.tls.ca_cert_path

    def start(self) -> str:
        """Start serving in a daemon thread; returns the https base URL."""
        if self._server is not None:
            raise RuntimeError("SANDBOX engine already started")
        store = Store(self.state_dir / DB_FILE)
        _check_seed(store, self.seed)
        if self.webhook_url:
            self.webhooks = WebhookSender(
                store, self.webhook_url, self._webhook_secret or "", self.webhook_ca_file
            )
            self.webhooks.start()
        config = EngineConfig(
            service=Service(
                store,
                self.seed,
                self._clock,
                self._delivery,
                on_events=self.webhooks.notify if self.webhooks else None,
            ),
            token=self.token,
            signing_secret=self.signing_secret,
            faults=FaultInjector(self.fail_rate, self.seed),
            limiter=RateLimiter(self.rate_limit),
        )
        ssl_context = make_ssl_context(str(self.tls.cert_path), str(self.tls.key_path))
        try:
            server = SandboxHTTPServer((self.host, self.port), ssl_context, config)
        except BaseException:
            store.close()
            raise
        self._store, self._server = store, server
        port = server.server_address[1]
        self.base_url = f"https://{_url_host(self.host)}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox-engine"
        )
        self._thread.daemon = True
        self._thread.start()
        _write_json(
            self.state_dir / ENDPOINT_FILE,
            {"base_url": self.base_url, "ca_cert": str(self.ca_cert_path), "sandbox": True},
        )
        log.info("SANDBOX engine listening on %s (seed %s)", self.base_url, self.seed)
        return self.base_url

    def stop(self) -> None:
        """Stop serving, close open connections, join workers and close the database."""
        server, thread, store = self._server, self._thread, self._store
        if server is None:
            return
        server.shutdown()  # stops the accept loop
        server.close_connections()  # wakes workers parked on idle keep-alive connections
        server.server_close()  # joins workers
        if thread is not None:
            thread.join()
        if self.webhooks is not None:
            self.webhooks.stop()
            self.webhooks = None
        close_delivery = getattr(self._delivery, "close", None)
        if close_delivery is not None:
            close_delivery()
        if store is not None:
            store.close()
        (self.state_dir / ENDPOINT_FILE).unlink(missing_ok=True)
        self._server = self._thread = self._store = None
        log.info("SANDBOX engine stopped (%s)", self.base_url)

    def __enter__(self) -> SandboxEngine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    state_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8443,
    seed: int = 7,
    *,
    token: str | None = None,
    signing_secret: str | None = None,
    fail_rate: float = 0.0,
    rate_limit: int | None = None,
    allow_non_loopback: bool = False,
    stop_event: threading.Event | None = None,
    on_ready: Callable[[SandboxEngine], None] | None = None,
    smtp_sink_port: int | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    webhook_ca_file: str | None = None,
) -> None:
    """Run the SANDBOX engine until SIGINT/SIGTERM (or `stop_event` is set). Blocks.

    For CLIs (`python -m sandbox`, `hub engine serve`). `on_ready` gets the started engine,
    e.g. to print where it listens; by default a banner goes to the log. `smtp_sink_port`
    also starts a local SMTP sink (STARTTLS, sandbox CA; mail kept in `<state>/maildir`) and
    delivers every simulated send to it as a MIME message; `webhook_url` pushes the event
    stream there as signed webhooks.
    """
    sink = delivery = None
    if smtp_sink_port is not None:
        from connectors.email.smtp_transport import RelaySettings
        from sandbox.delivery import SmtpDelivery
        from sandbox.smtp_sink import SmtpSink

        tls = ensure_local_ca(Path(state_dir) / "tls")
        sink = SmtpSink(tls, "127.0.0.1", smtp_sink_port, folder=Path(state_dir) / "maildir")
        sink.start()
        relay = RelaySettings("127.0.0.1", sink.port, ca_file=str(tls.ca_cert_path))
        delivery = SmtpDelivery(relay)
        log.warning("SANDBOX smtp sink on 127.0.0.1:%s (STARTTLS)", sink.port)
    engine = SandboxEngine(
        state_dir,
        host,
        port,
        seed,
        token=token,
        signing_secret=signing_secret,
        fail_rate=fail_rate,
        rate_limit=rate_limit,
        allow_non_loopback=allow_non_loopback,
        delivery=delivery,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        webhook_ca_file=webhook_ca_file,
    )
    stop = stop_event or threading.Event()
    restore: dict[signal.Signals, Any] = {}
    if stop_event is None and threading.current_thread() is threading.main_thread():
        # The handler only sets the event; the main thread then stops the server. Calling
        # shutdown() from a signal handler could deadlock against serve_forever.
        for signum in (signal.SIGINT, signal.SIGTERM):
            restore[signum] = signal.signal(signum, lambda *_: stop.set())
    engine.start()
    try:
        if on_ready is not None:
            on_ready(engine)
        else:
            log.warning(
                "SANDBOX engine (not for production) at %s; CA file %s",
                engine.base_url,
                engine.ca_cert_path,
            )
        while not stop.wait(0.5):
            pass
    finally:
        engine.stop()
        if sink is not None:
            sink.stop()
        for signum, previous in restore.items():
            signal.signal(signum, previous)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _check_seed(store: Store, seed: int) -> None:
    previous = store.meta("seed")
    if previous is None:
        store.set_meta("seed", str(seed))
    elif previous != str(seed):
        # Not an error: existing events stay as they are, only new sends use the new seed.
        log.warning("SANDBOX state was created with seed %s, now running with %s", previous, seed)


def _load_or_create_credentials(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
        if isinstance(data.get("token"), str) and isinstance(data.get("signing_secret"), str):
            return {"token": data["token"], "signing_secret": data["signing_secret"]}
    except (OSError, ValueError):
        pass
    data = {"token": secrets.token_urlsafe(32), "signing_secret": secrets.token_urlsafe(32)}
    _write_json(path, data)
    log.info("SANDBOX engine: generated credentials in %s", path)
    return data


def _write_json(path: Path, data: dict[str, object]) -> None:
    # Owner-only from creation; rename for atomicity so readers never see half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)

"""Webhook receiver: verify, refuse replays, spool durably, answer 2xx fast, apply after.

    POST /webhooks/hub        hub/sandbox batches, X-Hub-Signature (HMAC, shared secret)
    POST /webhooks/sendgrid   SendGrid signed event webhook (ECDSA verification key)
    POST /webhooks/ses        SES events as SNS notifications (pinned SNS certificate)

A delivery is accepted only with a valid signature whose timestamp lies within the window;
the same signature presented twice is refused as a replay (409). The verified events are
parsed into the hub's PHI-free shape (person token, type, time, flags: never an address)
and written to a spool file that is fsynced before the 2xx goes out, so the sender may
forget a delivery as soon as it has its answer. An applier drains the spool into
engagement.events / engagement.suppressions, one transaction per file, idempotent by event
id, so a crash between the commit and the file's removal re-applies harmlessly and a
legitimate re-delivery (new signature, same events) counts once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psycopg
from cryptography import x509

from connectors.email import events as readers
from connectors.email.base import EngineEvent
from connectors.email.https_server import HttpsServer, Request, Response
from connectors.email.webhook_auth import (
    WINDOW_SECONDS,
    WebhookRejected,
    verify_hub,
    verify_sendgrid,
    verify_sns,
)
from services.feedback import FeedbackResult, store_events

log = logging.getLogger(__name__)


@dataclass
class WebhookSettings:
    """Who may post: shared secrets (hub), a SendGrid verification key, pinned SNS certs."""

    destination: str
    hub_secrets: list[str] = field(default_factory=list)
    sendgrid_public_key: str | None = None
    sns_certificates: Mapping[str, x509.Certificate] = field(default_factory=dict)
    window_seconds: int = WINDOW_SECONDS


class WebhookSpool:
    """Verified, parsed deliveries as NDJSON files: written atomically and fsynced."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def write(self, source: str, parsed: readers.ParsedEvents) -> Path:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.ndjson"
        header = {"source": source, "unmapped": parsed.unmapped}
        lines = [orjson.dumps(header)] + [orjson.dumps(_row(e)) for e in parsed.events]
        tmp = self.folder / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"\n".join(lines) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        final = self.folder / name
        os.replace(tmp, final)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself is durable before we answer 2xx
        finally:
            os.close(dir_fd)
        return final

    def pending(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.ndjson") if not p.name.startswith("."))

    @staticmethod
    def load(path: Path) -> tuple[str, int, list[EngineEvent]]:
        lines = path.read_bytes().splitlines()
        header = orjson.loads(lines[0])
        events = [_event(orjson.loads(line)) for line in lines[1:] if line.strip()]
        return header["source"], int(header.get("unmapped", 0)), events


class WebhookReceiver:
    """The request handler: verification, replay refusal, parsing, spooling."""

    ROUTES = ("/webhooks/hub", "/webhooks/sendgrid", "/webhooks/ses")

    def __init__(
        self,
        settings: WebhookSettings,
        spool: WebhookSpool,
        clock: Callable[[], float] = time.time,
        on_spooled: Callable[[], None] | None = None,
    ) -> None:
        self.settings, self.spool, self.clock = settings, spool, clock
        self.on_spooled = on_spooled
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> forget after
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        if request.method != "POST":
            return _json(405, {"error": {"code": "METHOD_NOT_ALLOWED"}})
        if request.path not in self.ROUTES:
            return _json(404, {"error": {"code": "NOT_FOUND"}})
        source = request.path.rsplit("/", 1)[1]
        try:
            key, parsed = self._verify_and_parse(source, request)
            self._refuse_replay(key)
        except WebhookRejected as rejected:
            log.warning("webhook %s refused: %s (%s)", source, rejected.code, rejected)
            return _json(rejected.status, {"error": {"code": rejected.code}})
        except readers.EventShapeError:
            log.warning("webhook %s refused: WEBHOOK_BAD_PAYLOAD", source)
            return _json(400, {"error": {"code": "WEBHOOK_BAD_PAYLOAD"}})
        try:
            self.spool.write(source, parsed)
        except BaseException:
            with self._lock:  # not accepted after all: a retry with this signature is fine
                self._seen.pop(key, None)
            raise
        if self.on_spooled is not None:
            self.on_spooled()
        return _json(200, {"accepted": len(parsed.events), "unmapped": parsed.unmapped})

    def _verify_and_parse(self, source: str, request: Request) -> tuple[str, readers.ParsedEvents]:
        s, now = self.settings, self.clock()
        if source == "hub":
            if not s.hub_secrets:
                raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "no hub secret configured")
            key = verify_hub(
                request.headers, request.target, request.body, s.hub_secrets, now, s.window_seconds
            )
            return key, readers.hub_batch(request.body)
        if source == "sendgrid":
            if not s.sendgrid_public_key:
                raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "no SendGrid key configured")
            key = verify_sendgrid(
                request.headers, request.body, s.sendgrid_public_key, now, s.window_seconds
            )
            return key, readers.sendgrid_batch(request.body)
        envelope = readers.load_json(request.body)
        if not isinstance(envelope, dict):
            raise readers.EventShapeError("an SNS delivery is a JSON object")
        key = verify_sns(envelope, s.sns_certificates, now)
        if envelope.get("Type") != "Notification":
            # Subscription confirmations are confirmed by an operator, never automatically
            # (that would fetch a URL named by the request); accept and record nothing.
            return key, readers.ParsedEvents()
        return key, readers.ses_sns_notification(envelope)

    def _refuse_replay(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now:
                self._seen.popitem(last=False)
            if key in self._seen:
                raise WebhookRejected(
                    "WEBHOOK_REPLAYED", "this delivery was already accepted", status=409
                )
            # Remember a signature for as long as its timestamp could pass the window.
            self._seen[key] = now + 2 * self.settings.window_seconds


def apply_spool(conn: psycopg.Connection, spool: WebhookSpool, destination: str) -> FeedbackResult:
    """Drain the spool into engagement.*: one transaction per file, then remove the file."""
    total = FeedbackResult(destination)
    for path in spool.pending():
        source, unmapped, events = spool.load(path)
        result = store_events(
            conn, destination, events, source=f"webhook/{source}", unmapped=unmapped
        )
        total.read += result.read
        total.new += result.new
        total.by_type.update(result.by_type)
        total.suppressions += result.suppressions
        total.unmapped += result.unmapped
        path.unlink()
    return total


class WebhookService:
    """The receiver served over HTTPS plus a background applier into the warehouse."""

    def __init__(
        self,
        settings: WebhookSettings,
        spool_dir: str | os.PathLike[str],
        connect: Callable[[], psycopg.Connection],
        cert_path: str,
        key_path: str,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = WebhookSpool(spool_dir)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._apply_lock = threading.Lock()  # the applier thread and drain() take turns
        self.receiver = WebhookReceiver(settings, self.spool, clock, on_spooled=self._wake.set)
        self.server = HttpsServer(
            self.receiver, cert_path, key_path, host, port, name="webhook-receiver"
        )
        self.settings, self._connect = settings, connect
        self._applier: threading.Thread | None = None
        self.applied = FeedbackResult(settings.destination)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def start(self) -> str:
        self._applier = threading.Thread(target=self._apply_loop, name="webhook-applier")
        self._applier.daemon = True
        self._applier.start()
        return self.server.start()

    def drain(self) -> FeedbackResult:
        """Apply whatever is spooled now (also what the applier thread does)."""
        with self._apply_lock, self._connect() as conn:
            return apply_spool(conn, self.spool, self.settings.destination)

    def stop(self) -> None:
        self.server.stop()
        self._stop.set()
        self._wake.set()
        if self._applier is not None:
            self._applier.join()

    def _apply_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                result = self.drain()
            except Exception:  # the spool keeps the files; the next wake-up retries
                log.exception("webhook applier: could not apply the spool; will retry")
                continue
            self.applied.new += result.new
            self.applied.suppressions += result.suppressions

    def __enter__(self) -> WebhookService:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _row(event: EngineEvent) -> dict[str, object]:
    # No URL: a clicked link can carry campaign query strings the warehouse does not need.
    return {
        "event_id": event.event_id,
        "type": event.type,
        "external_id": event.external_id,
        "audience_id": event.audience_id,
        "occurred_at": event.occurred_at.isoformat(),
        "machine_open": event.machine_open,
        "bounce_type": event.bounce_type,
    }


def _event(row: dict[str, object]) -> EngineEvent:
    return EngineEvent(
        event_id=str(row["event_id"]),
        type=str(row["type"]),
        external_id=str(row["external_id"]),
        audience_id=str(row["audience_id"]),
        occurred_at=dt.datetime.fromisoformat(str(row["occurred_at"])),
        machine_open=bool(row["machine_open"]),
        bounce_type=row["bounce_type"],  # type: ignore[arg-type]
    )


def _json(status: int, payload: dict[str, object]) -> Response:
    return Response(status, orjson.dumps(payload))

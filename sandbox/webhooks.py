"""SANDBOX webhooks: the event stream pushed to a receiver as signed batches, with retries.

A background thread reads the engine's event table after a cursor kept in the sandbox
database (meta `webhook_seq`), POSTs `{"events": [...], "sandbox": true}` signed with
X-Hub-Signature (docs/engine-api.md, method POST, the receiver's path), and advances the
cursor only on a 2xx. Anything else - a refusal, a timeout, a dropped connection - is
retried with exponential backoff and jitter, forever, so a receiver that was down gets every
event once it is back (at least once; receivers dedupe by event id). Each attempt is signed
afresh, so a retry is never mistaken for a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from urllib.parse import urlsplit

import orjson
import requests

from sandbox.store import Store

log = logging.getLogger("sandbox.engine")

CURSOR_KEY = "webhook_seq"


class WebhookSender:
    """Delivers events to `url` (https only, verified against `ca_file`)."""

    def __init__(
        self,
        store: Store,
        url: str,
        secret: str,
        ca_file: str | None = None,
        *,
        batch_size: int = 500,
        backoff_base: float = 0.2,
        backoff_max: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("SANDBOX webhooks are only sent to https:// URLs")
        self.store, self.url, self.secret = store, url, secret
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.verify: str | bool = ca_file or True
        self.batch_size, self.timeout = batch_size, timeout
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.attempts = 0
        self.delivered = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        self._session.trust_env = False
        self._rng = random.Random()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks")
        self._thread.daemon = True
        self._thread.start()

    def notify(self) -> None:
        """New events were committed: deliver them now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._session.close()

    def backlog(self) -> int:
        """Events not yet acknowledged by the receiver."""
        seq = int(self.store.meta(CURSOR_KEY) or 0)
        return len(self.store.events_after(seq, 10**9))

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            seq = int(self.store.meta(CURSOR_KEY) or 0)
            rows = self.store.events_after(seq, self.batch_size)
            if not rows:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if self._post([_event(e) for _, e in rows]):
                self.store.set_meta(CURSOR_KEY, str(rows[-1][0]))
                self.delivered += len(rows)
                failures = 0
                continue
            failures += 1
            cap = min(self.backoff_max, self.backoff_base * 2 ** min(failures, 16))
            self._stop.wait(self._rng.uniform(0, cap))

    def _post(self, events: list[dict[str, object]]) -> bool:
        self.attempts += 1
        body = orjson.dumps({"events": events, "sandbox": True})
        t = int(time.time())
        message = f"{t}.POST.{self.target}.{hashlib.sha256(body).hexdigest()}".encode()
        signature = hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature": f"t={t},v1={signature}",
            "X-Sandbox": "true",
        }
        try:
            answer = self._session.post(
                self.url,
                data=body,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            log.info("SANDBOX webhook delivery failed (%s); will retry", type(exc).__name__)
            return False
        if 200 <= answer.status_code < 300:
            return True
        log.info("SANDBOX webhook answered %s; will retry", answer.status_code)
        return False


def _event(e) -> dict[str, object]:
    return {
        "event_id": e.event_id,
        "type": e.type,
        "external_id": e.external_id,
        "audience_id": e.audience_id,
        "occurred_at": e.occurred_at,
        "machine_open": e.machine_open,
        "bounce_type": e.bounce_type,
        "url": e.url,
    }

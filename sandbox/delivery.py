"""SANDBOX delivery seam: where a simulated send hands a real MIME message to a sink.

`NoDelivery` (the default) simulates only. `SmtpDelivery` renders one MIME message per send
and delivers it over SMTP with STARTTLS (certificate verified against the sandbox CA, never a
plaintext fallback) to a local sink - `sandbox.smtp_sink.SmtpSink` - so content and headers
can be asserted in tests and looked at in the demo. Messages are labelled SANDBOX in the
subject and an `X-Sandbox: true` header, and go from a reserved `.invalid` domain.

Delivery runs on a background thread with one kept-alive SMTP session, so the engine's
HTTP answers never wait on SMTP; `flush()` waits until the queue is empty.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from connectors.email.smtp_transport import RelaySettings, SmtpError, SmtpRelay

log = logging.getLogger("sandbox.engine")

SANDBOX_SENDER = "sandbox-engine@audience-hub.invalid"


class DeliverySink(Protocol):
    """Receives one send after it is committed (never inside the database transaction)."""

    def deliver(
        self, audience_id: str, external_id: str, email: str, fields: Mapping[str, str | None]
    ) -> None: ...


class NoDelivery:
    """The default sink: sends are simulated only, nothing leaves the process."""

    def deliver(
        self, audience_id: str, external_id: str, email: str, fields: Mapping[str, str | None]
    ) -> None:
        return None

    def close(self) -> None:
        return None


def render_sandbox_message(
    audience_id: str, external_id: str, email: str, fields: Mapping[str, str | None]
) -> EmailMessage:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = f"SANDBOX engine <{SANDBOX_SENDER}>"
    message["To"] = email
    message["Subject"] = f"[SANDBOX] {audience_id}"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="audience-hub.invalid")
    message["X-Sandbox"] = "true"
    message["X-Hub-External-Id"] = external_id
    name = fields.get("given_name") or "there"
    message.set_content(
        f"Hello {name},\n\nThis message was rendered by the audience-hub SANDBOX engine for "
        f"the audience '{audience_id}'. It was never sent anywhere but a local sink.\n"
    )
    return message


class SmtpDelivery:
    """Delivers every simulated send to an SMTP sink over verified STARTTLS."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue[tuple[str, str, str, dict[str, str | None]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sandbox-smtp", daemon=True)
        self._thread.start()

    def deliver(
        self, audience_id: str, external_id: str, email: str, fields: Mapping[str, str | None]
    ) -> None:
        self._queue.put((audience_id, external_id, email, dict(fields)))

    def flush(self) -> None:
        """Block until every queued message was delivered (or failed)."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        relay = SmtpRelay(self.settings)
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    relay.close()
                    return
                audience_id, external_id, email, fields = item
                message = render_sandbox_message(audience_id, external_id, email, fields)
                try:
                    relay.send(message.as_bytes(), SANDBOX_SENDER, email)
                    self.delivered += 1
                except SmtpError as exc:
                    # A sandbox sink that is down only loses sandbox mail; say so, go on.
                    self.failed += 1
                    log.warning("SANDBOX smtp delivery failed: %s (%s)", exc.code, exc)
            finally:
                self._queue.task_done()

"""Open, click and one-click unsubscribe tracking for messages the hub sends itself.

Tracking URLs carry one signed, expiring token and nothing else:

    token = b64url(f"{kind}.{message_ref}.{link}.{expires}") + "." + b64url(HMAC-SHA256[:16])

`message_ref` is a random reference of the message (connectors/email/smtp_state.py), not a
person token and never an address; the link target is looked up by index, so neither the
destination URL nor anything about the person rides in the URL. Tokens are checked in
constant time and refused after they expire.

Endpoints (HTTPS, served by connectors/email/https_server.py):
    GET  /t/o/<token>   open pixel (1x1 GIF); proxies and scanners flagged machine_open
    GET  /t/c/<token>   click: records it and redirects (302) to the stored link target
    GET  /t/u/<token>   unsubscribe page with a confirm button (GET never unsubscribes:
                        mail scanners follow links)
    POST /t/u/<token>   RFC 8058 one-click (`List-Unsubscribe=One-Click`) or the button
An expired or forged token gets 404 with no detail.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from connectors.email.events import looks_like_machine_open
from connectors.email.https_server import Request, Response
from connectors.email.smtp_state import SmtpState

KINDS = {"o": "open", "c": "click", "u": "unsubscribe", "s": "secure"}
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
MACHINE_OPEN_SECONDS = 5  # a fetch this soon after the send is a prefetch, not a reader


@dataclass(frozen=True, slots=True)
class TokenClaims:
    kind: str
    message_ref: str
    link: int
    expires: int


class TokenSigner:
    """Makes and verifies tracking tokens under one secret (at least 32 bytes)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the tracking token secret must be at least 32 bytes")
        self._secret = secret

    def make(self, kind: str, message_ref: str, expires: int, link: int = 0) -> str:
        if kind not in KINDS or not message_ref.isalnum():
            raise ValueError("bad token kind or message reference")
        payload = f"{kind}.{message_ref}.{link}.{expires}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, now: float, kind: str | None = None) -> TokenClaims | None:
        """The claims of a valid, unexpired token (of `kind`, if given); else None."""
        body, sep, mac = token.partition(".")
        if not sep:
            return None
        try:
            payload, presented = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(self._mac(payload), presented):
            return None
        try:
            token_kind, ref, link, expires = payload.decode().split(".")
            claims = TokenClaims(token_kind, ref, int(link), int(expires))
        except (UnicodeDecodeError, ValueError):
            return None
        if claims.expires < now or (kind is not None and claims.kind != kind):
            return None
        return claims

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]


class TrackingEndpoint:
    """The request handler: verifies tokens and records events into the adapter's state."""

    def __init__(
        self,
        state: SmtpState,
        signer: TokenSigner,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state, self.signer, self.clock = state, signer, clock

    def __call__(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "t" or parts[1] not in ("o", "c", "u"):
            return _not_found()
        kind, token = parts[1], parts[2]
        now = self.clock()
        claims = self.signer.verify(token, now, kind)
        message = self.state.message(claims.message_ref) if claims else None
        if claims is None or message is None:
            return _not_found()
        when = _iso(now)
        if kind == "o":
            if request.method not in ("GET", "HEAD"):
                return _not_found()
            agent = request.headers.get("User-Agent")
            sent = dt.datetime.fromisoformat(message.sent_at).timestamp()
            machine = looks_like_machine_open(agent) or now - sent < MACHINE_OPEN_SECONDS
            self.state.add_event(
                f"trk_{uuid.uuid4().hex}",
                "open",
                message.external_id,
                message.audience_id,
                when,
                machine_open=machine,
            )
            return Response(200, PIXEL, "image/gif")
        if kind == "c":
            if request.method != "GET" or not 0 <= claims.link < len(message.links):
                return _not_found()
            target = message.links[claims.link]
            self.state.add_event(
                f"trk_{uuid.uuid4().hex}",
                "click",
                message.external_id,
                message.audience_id,
                when,
                url=target,
            )
            return Response(302, b"", "text/plain", {"Location": target})
        if request.method == "GET":
            return Response(200, _confirm_page(token), "text/html; charset=utf-8")
        if request.method != "POST":
            return _not_found()
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if form.get("List-Unsubscribe") != ["One-Click"] and "confirm" not in form:
            return Response(400, b"expected List-Unsubscribe=One-Click", "text/plain")
        # One unsubscribe per message, however often the button is pressed.
        event_id = "trk_unsub_" + hashlib.sha256(message.message_ref.encode()).hexdigest()[:24]
        self.state.add_event(
            event_id, "unsubscribe", message.external_id, message.audience_id, when
        )
        return Response(200, b"You are unsubscribed.", "text/plain; charset=utf-8")


def _confirm_page(token: str) -> bytes:
    return (
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>"
        f'<form method="post" action="{token}"><input type="hidden" name="confirm" value="1">'
        "<p>Stop these emails?</p><button type=submit>Unsubscribe</button></form>"
    ).encode()


def _not_found() -> Response:
    return Response(404, b"not found", "text/plain")


def _iso(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

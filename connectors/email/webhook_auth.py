"""Verifying who sent a webhook, and when: HMAC (hub/sandbox), ECDSA (SendGrid), SNS (SES).

Every check answers with a WebhookRejected carrying a domain.reasons code; messages name the
header or the rule, never a value from the body.

- hub / sandbox: `X-Hub-Signature: t=<unix>,v1=<hex>` as in docs/engine-api.md, over
  `{t}.POST.{target}.{sha256(body)}` with the shared secret; `|now - t|` within the window.
- SendGrid signed event webhook: `X-Twilio-Email-Event-Webhook-Signature` (base64 ECDSA
  P-256/SHA-256 over `timestamp + body`) and `X-Twilio-Email-Event-Webhook-Timestamp`,
  checked against the account's verification key (base64 DER public key).
- Amazon SNS: the message signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) over
  the canonical string, with a certificate the operator has pinned for the SigningCertURL
  (the hub never fetches certificates from a URL named in the request it is checking).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

HUB_SIGNATURE = "X-Hub-Signature"
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
WINDOW_SECONDS = 300
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")


class WebhookRejected(Exception):
    """A webhook that must not be accepted; `code` is a domain.reasons code."""

    def __init__(self, code: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def verify_hub(
    headers: Mapping[str, str],
    target: str,
    body: bytes,
    secrets: list[str],
    now: float,
    window: int = WINDOW_SECONDS,
) -> str:
    """Check an X-Hub-Signature; returns the matching signature (the replay-cache key)."""
    value = _header(headers, HUB_SIGNATURE)
    t, candidates = None, []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if sep and key == "t" and val.isdigit():
            t = int(val)
        elif sep and key == "v1":
            candidates.append(val.lower())
    if t is None or not candidates:
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", f"malformed {HUB_SIGNATURE} header")
    _check_window(t, now, window)
    digest = hashlib.sha256(body).hexdigest()
    message = f"{t}.POST.{target}.{digest}".encode()
    for secret in secrets:  # several secrets: rotation without downtime
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate):
                return f"hub:{t}:{candidate}"
    raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "signature does not match the body")


def verify_sendgrid(
    headers: Mapping[str, str],
    body: bytes,
    public_key_b64: str,
    now: float,
    window: int = WINDOW_SECONDS,
) -> str:
    """Check a SendGrid signed event webhook; returns the signature (replay-cache key)."""
    signature_b64 = _header(headers, SENDGRID_SIGNATURE)
    timestamp = _header(headers, SENDGRID_TIMESTAMP)
    if not timestamp.isdigit():
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", f"malformed {SENDGRID_TIMESTAMP}")
    _check_window(int(timestamp), now, window)
    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, binascii.Error):
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "malformed signature or key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "the verification key is not ECDSA")
    try:
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "signature does not match") from None
    return f"sendgrid:{timestamp}:{signature_b64}"


def verify_sns(
    envelope: Mapping[str, Any],
    certificates: Mapping[str, x509.Certificate],
    now: float,
    window: int = 3600,
) -> str:
    """Check an SNS message signature with a pinned certificate; returns the MessageId."""
    cert_url = str(envelope.get("SigningCertURL") or "")
    parts = urlsplit(cert_url)
    if parts.scheme != "https" or not _SNS_HOST.fullmatch(parts.hostname or ""):
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "SigningCertURL is not an SNS https URL")
    cert = certificates.get(cert_url)
    if cert is None:
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "no pinned certificate for the signer")
    version = str(envelope.get("SignatureVersion"))
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
    if algorithm is None:
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "unknown SNS SignatureVersion")
    try:
        signature = base64.b64decode(str(envelope.get("Signature")), validate=True)
        sent = dt.datetime.fromisoformat(str(envelope["Timestamp"]).replace("Z", "+00:00"))
    except (KeyError, ValueError, binascii.Error):
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "malformed SNS signature") from None
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "the pinned certificate is not RSA")
    try:
        public_key.verify(signature, sns_string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", "SNS signature does not match") from None
    _check_window(int(sent.timestamp()), now, window)
    return f"sns:{envelope.get('MessageId')}"


def sns_string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    """The canonical string SNS signs (keys in byte order, each `key\\nvalue\\n`)."""
    if envelope.get("Type") == "Notification":
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{k}\n{envelope[k]}\n" for k in keys if envelope.get(k) is not None)
    return text.encode()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:  # http.server's message objects are case-insensitive; dicts are not
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    if not value:
        raise WebhookRejected("WEBHOOK_BAD_SIGNATURE", f"missing {name} header")
    return value


def _check_window(t: int, now: float, window: int) -> None:
    if abs(now - t) > window:
        raise WebhookRejected("WEBHOOK_STALE", f"timestamp outside +/-{window} s")

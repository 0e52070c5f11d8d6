"""SANDBOX request authentication: bearer token plus HMAC-SHA256 request signature.

Implemented from docs/engine-api.md independently of the client's signer
(connectors/email/signing.py), so a drift between the two shows up as 401s in the tests
instead of being hidden by shared code.

    X-Hub-Signature: t=<unix seconds>,v1=<hex>
    hex = HMAC-SHA256(secret, f"{t}.{METHOD}.{target}.{sha256hex(body)}")

`target` is the request target exactly as sent on the request line: path plus `?query` if any.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from sandbox.errors import ApiError

SIGNATURE_HEADER = "X-Hub-Signature"
MAX_SKEW_SECONDS = 300


def expected_signature(secret: str, t: int, method: str, target: str, body: bytes) -> str:
    """The hex v1 signature for one request."""
    message = f"{t}.{method.upper()}.{target}.{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify_request(
    headers: Mapping[str, str],
    method: str,
    target: str,
    body: bytes,
    *,
    token: str,
    secret: str,
    now: float,
) -> None:
    """Raise ApiError(401) unless both the bearer token and a fresh signature check out."""
    auth = headers.get("Authorization") or ""
    scheme, _, presented = auth.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise _unauthorized("AUTH_MISSING", "missing bearer token")
    # compare_digest: equal-time comparison, so the token cannot be guessed byte by byte.
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise _unauthorized("AUTH_BAD_TOKEN", "bearer token not accepted")

    parts = _parse_signature(headers.get(SIGNATURE_HEADER) or "")
    if parts is None:
        raise _unauthorized("AUTH_BAD_SIGNATURE", f"missing or malformed {SIGNATURE_HEADER}")
    t, candidates = parts
    # Checked before the HMAC so a replayed old request is told why, but both must pass.
    if abs(now - t) > MAX_SKEW_SECONDS:
        raise _unauthorized("AUTH_STALE_TIMESTAMP", "signature timestamp outside +/-300 s")
    expected = expected_signature(secret, t, method, target, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise _unauthorized("AUTH_BAD_SIGNATURE", "signature does not match")


def _parse_signature(value: str) -> tuple[int, list[str]] | None:
    t: int | None = None
    candidates: list[str] = []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if not val.isdigit() or t is not None:
                return None
            t = int(val)
        elif key == "v1":
            candidates.append(val.lower())  # several v1 values allow secret rotation
    if t is None or not candidates:
        return None
    return t, candidates


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="sandbox"'})

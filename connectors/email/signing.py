"""Request signing for the engine API (docs/engine-api.md, "Authentication").

    X-Hub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, message)>
    message = f"{t}.{METHOD}.{target}.{sha256(body).hexdigest()}"

`target` is the request target as it goes on the wire: the path plus `?query` when present.
The timestamp bounds replay: the engine refuses signatures older (or newer) than 300 s.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Hub-Signature"


def signature_header(secret: str, method: str, target: str, body: bytes, timestamp: int) -> str:
    """The X-Hub-Signature value for one request."""
    message = f"{timestamp}.{method.upper()}.{target}.{hashlib.sha256(body).hexdigest()}"
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"

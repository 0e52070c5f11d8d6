"""SMART Backend Services authorization: a signed JWT client assertion for an access token.

The assertion (RS384 or ES384, `cryptography` only) carries iss = sub = client id, aud = the
token URL, a unique jti and an exp at most five minutes ahead, as the SMART App Launch
Backend Services profile requires. The access token is cached until shortly before it
expires; `invalidate()` drops it when a server answers 401 to a token it has revoked early.
Neither the assertion, the key nor the token is ever logged or put into an error message.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

import orjson

from connectors.fhir.bulk.errors import BulkAuthError, BulkProtocolError, outcome_code
from connectors.fhir.bulk.jws import PrivateKey, algorithm_for, public_jwk, sign_compact
from connectors.fhir.bulk.transport import Transport, require_https

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300  # seconds; the SMART profile's upper bound
DEFAULT_SCOPE = "system/*.read"


@dataclass
class AccessToken:
    value: str
    expires_at: float  # wall-clock seconds
    scope: str

    def __repr__(self) -> str:  # never the token itself
        return f"AccessToken(expires_at={self.expires_at:.0f}, scope={self.scope!r})"


@dataclass
class BackendServicesAuth:
    """Client credentials with a private-key JWT assertion; thread-safe token cache."""

    client_id: str
    token_url: str
    private_key: PrivateKey = field(repr=False)
    transport: Transport
    scope: str = DEFAULT_SCOPE
    kid: str | None = None  # default: the RFC 7638 thumbprint of the public key
    assertion_lifetime: int = MAX_ASSERTION_LIFETIME
    refresh_margin: float = 30.0  # renew this long before expiry so a request never races it
    _token: AccessToken | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    tokens_fetched: int = field(default=0, init=False)
    algorithm: str = field(default="", init=False)

    def __post_init__(self) -> None:
        require_https(self.token_url, "token URL")
        if not 0 < self.assertion_lifetime <= MAX_ASSERTION_LIFETIME:
            raise ValueError(f"assertion lifetime must be 1..{MAX_ASSERTION_LIFETIME} seconds")
        self.algorithm = algorithm_for(self.private_key)
        self.kid = self.kid or public_jwk(self.private_key)["kid"]

    def client_assertion(self) -> str:
        """A fresh signed assertion; every call has a new jti so none can be replayed."""
        now = int(self.transport.clock())
        header = {"alg": self.algorithm, "kid": self.kid, "typ": "JWT"}
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "exp": now + self.assertion_lifetime,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        return sign_compact(header, claims, self.private_key)

    def access_token(self) -> str:
        """The cached token while it has more than `refresh_margin` seconds left, else a new one."""
        with self._lock:
            token = self._token
            if token is None or token.expires_at - self.refresh_margin <= self.transport.clock():
                token = self._token = self._fetch()
            return token.value

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> AccessToken:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        headers = {"Accept": "application/json"}
        resp = self.transport.send("token", "POST", self.token_url, headers=headers, data=form)
        if resp.status_code != 200:
            code = outcome_code(resp.content)
            resp.close()
            raise BulkAuthError(
                "token endpoint refused the client assertion", status=resp.status_code, code=code
            )
        try:
            data = orjson.loads(resp.content)
            value = data["access_token"]
            lifetime = float(data.get("expires_in", 300))
            token_type = str(data.get("token_type", "")).lower()
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise BulkProtocolError("token endpoint answer is not a token response") from None
        if not isinstance(value, str) or not value or token_type != "bearer":
            raise BulkProtocolError("token endpoint did not issue a bearer token")
        self.tokens_fetched += 1
        scope = data.get("scope") if isinstance(data.get("scope"), str) else self.scope
        return AccessToken(value, self.transport.clock() + max(0.0, lifetime), scope)

"""Typed errors of email-engine adapters, each tied to a reason code in domain.reasons.

Messages name the operation, the HTTP status and the attempt count; they never carry a
request or response body, an email address or a field value, so they are safe to log and to
store with a sync run.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of all engine adapter errors; `code` is a key of domain.reasons.REASONS."""

    code = "ENGINE_UNAVAILABLE"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EngineUnavailable(EngineError):
    """5xx or no answer, still so after the bounded retries: defer and try again later."""

    code = "ENGINE_UNAVAILABLE"


class EngineRateLimited(EngineUnavailable):
    """Still 429 after the bounded retries. A kind of unavailability: defer, like 5xx."""

    code = "ENGINE_RATE_LIMITED"


class EngineTlsError(EngineError):
    """The engine's certificate was refused. Never retried: it will not fix itself."""

    code = "ENGINE_TLS_FAILED"


class EngineAuthError(EngineError):
    """401/403: wrong token, wrong signing secret, or a clock off by more than 300 s."""

    code = "ENGINE_AUTH_FAILED"


class EngineIdempotencyConflict(EngineError):
    """409: the idempotency key was already used for a different request (a caller bug)."""

    code = "ENGINE_IDEMPOTENCY_CONFLICT"


class EngineBatchTooLarge(EngineError):
    """413: more members than the engine accepts in one request; split with `batched`."""

    code = "ENGINE_BATCH_TOO_LARGE"


class EngineRequestError(EngineError):
    """Any other 4xx (unknown audience, malformed request, bad cursor)."""

    code = "ENGINE_BAD_REQUEST"


class EngineProtocolError(EngineError):
    """A 2xx answer that does not follow the contract (not JSON, wrong shape)."""

    code = "ENGINE_BAD_RESPONSE"

"""Email-engine connectors: the engine interface (`base`), its errors, and the HTTP adapter.

The activation step depends on `EmailEngine` only; `HttpEngine` is the implementation for
engines speaking docs/engine-api.md (the SANDBOX engine in `sandbox/` speaks it too).
"""

from __future__ import annotations

from connectors.email.base import (
    EVENT_TYPES,
    MAX_BATCH,
    EmailEngine,
    EngineEvent,
    EventPage,
    Member,
    MemberResult,
    batched,
)
from connectors.email.errors import (
    EngineAuthError,
    EngineBatchTooLarge,
    EngineError,
    EngineIdempotencyConflict,
    EngineProtocolError,
    EngineRateLimited,
    EngineRequestError,
    EngineTlsError,
    EngineUnavailable,
)
from connectors.email.http_api import HttpEngine

__all__ = [
    "EVENT_TYPES",
    "MAX_BATCH",
    "EmailEngine",
    "EngineAuthError",
    "EngineBatchTooLarge",
    "EngineError",
    "EngineEvent",
    "EngineIdempotencyConflict",
    "EngineProtocolError",
    "EngineRateLimited",
    "EngineRequestError",
    "EngineTlsError",
    "EngineUnavailable",
    "EventPage",
    "HttpEngine",
    "Member",
    "MemberResult",
    "batched",
]

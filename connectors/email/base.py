"""The email-engine interface the activation step talks to, whatever the vendor.

Members are keyed by `external_id`, the person token - never by email - so results and
events map back to people without the engine's identifiers. Writes carry an idempotency key
chosen by the caller: retrying a write with the same key must never apply it twice.

Adapters raise the errors in connectors.email.errors. No orchestration (Dagster) imports here.
"""

from __future__ import annotations

import abc
import datetime as dt
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeVar

EVENT_TYPES = ("sent", "delivered", "open", "click", "bounce", "complaint", "unsubscribe")
MAX_BATCH = 1000  # members or external ids per write request

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Member:
    """One audience member to upsert. `email` and `fields` are PHI-adjacent: kept out of repr
    so a logged or printed Member never shows them."""

    external_id: str
    email: str = field(repr=False)
    fields: dict[str, str | None] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class MemberResult:
    """The engine's verdict on one member of a write; error_code is a domain.reasons code."""

    external_id: str | None
    status: Literal["ok", "rejected"]
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """One engagement event from the engine's stream. Carries no email address."""

    event_id: str
    type: str  # one of EVENT_TYPES (unknown types from a newer engine are passed through)
    external_id: str
    audience_id: str
    occurred_at: dt.datetime  # timezone-aware UTC
    machine_open: bool = False  # privacy-proxy prefetch, not a human open
    bounce_type: Literal["hard", "soft"] | None = None
    url: str | None = None  # clicks only


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of events and the cursor to resume after it (store it, poll again later)."""

    events: list[EngineEvent]
    next_cursor: str


class EmailEngine(abc.ABC):
    """An email engine: audiences, their members, and the engagement event stream."""

    # Whether one instance may serve several threads at once (the sync then keeps several
    # batches in flight); adapters that are not say so by leaving this False.
    thread_safe: bool = False

    @abc.abstractmethod
    def ensure_audience(self, audience_id: str, name: str, purpose: str) -> None:
        """Create the audience or update its name and purpose (idempotent by nature)."""

    @abc.abstractmethod
    def upsert(
        self, audience_id: str, members: list[Member], idempotency_key: str
    ) -> list[MemberResult]:
        """Add or update members; one result per member, in order. At most MAX_BATCH."""

    @abc.abstractmethod
    def remove(
        self, audience_id: str, external_ids: list[str], idempotency_key: str
    ) -> list[MemberResult]:
        """Remove members; removing a non-member succeeds. At most MAX_BATCH."""

    @abc.abstractmethod
    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        """Events after `cursor` (None: from the beginning), at most `limit`."""


def batched(iterable: Iterable[T], size: int = MAX_BATCH) -> Iterator[list[T]]:
    """Split into lists of at most `size` items (itertools.batched is Python 3.12+)."""
    if size < 1:
        raise ValueError("size must be at least 1")
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk

"""HttpEngine against the SANDBOX engine: real server on loopback, real TLS, real signatures."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.email import (
    EVENT_TYPES,
    EngineAuthError,
    EngineBatchTooLarge,
    EngineIdempotencyConflict,
    EngineRateLimited,
    EngineRequestError,
    EngineTlsError,
    EngineUnavailable,
    HttpEngine,
    Member,
    batched,
    http_api,
)
from connectors.email.errors import EngineProtocolError
from domain.reasons import REASONS
from sandbox import SandboxEngine

TOKEN = "adapter-token"
SECRET = "adapter-secret"
AUDIENCE = "flu-reminders-2026"


class Sleeps:
    """Records requested delays; really sleeps only when asked (Retry-After must elapse)."""

    def __init__(self, real: bool = False) -> None:
        self.calls: list[float] = []
        self.real = real

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.real:
            time.sleep(seconds)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Callable[..., SandboxEngine]]:
    engines: list[SandboxEngine] = []

    def _start(**kwargs: Any) -> SandboxEngine:
        engine = SandboxEngine(
            tmp_path / f"engine{len(engines)}", token=TOKEN, signing_secret=SECRET, **kwargs
        )
        engine.start()
        engines.append(engine)
        return engine

    yield _start
    for engine in engines:
        engine.stop()


def client(engine: SandboxEngine, **kwargs: Any) -> HttpEngine:
    options: dict[str, Any] = {
        "ca_file": str(engine.ca_cert_path),
        "timeout": 5.0,
        "backoff_base": 0.001,
        "sleep": Sleeps(),
        **kwargs,
    }
    assert engine.base_url is not None
    return HttpEngine(engine.base_url, TOKEN, SECRET, **options)


def people(n: int, start: int = 0) -> list[Member]:
    return [
        Member(f"tok_{i:04d}", f"person{i}@example.org", {"first_name": f"Name{i}"})
        for i in range(start, start + n)
    ]


def all_events(api: HttpEngine, limit: int = 100) -> list[Any]:
    events, cursor = [], None
    while True:
        page = api.events(cursor, limit)
        if not page.events:
            return events
        events.extend(page.events)
        cursor = page.next_cursor


# --- construction and TLS -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:8443", "HTTP://localhost", "ftp://x"])
def test_plaintext_and_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        HttpEngine(url, TOKEN, SECRET)


def test_credentials_in_url_are_refused() -> None:
    with pytest.raises(ValueError, match="credentials"):
        HttpEngine("https://user:pw@127.0.0.1", TOKEN, SECRET)


def test_default_trust_store_refuses_sandbox_certificate(
    sandbox: Callable[..., SandboxEngine],
) -> None:
    engine = sandbox()
    sleeps = Sleeps()
    api = client(engine, ca_file=None, sleep=sleeps)
    with pytest.raises(EngineTlsError) as err:
        api.ensure_audience(AUDIENCE, "Flu reminders", "marketing")
    assert err.value.code == "ENGINE_TLS_FAILED" in REASONS
    assert sleeps.calls == []  # a certificate verdict is final, never retried


# --- the round trip -----------------------------------------------------------------------


def test_upsert_list_remove_round_trip(sandbox: Callable[..., SandboxEngine]) -> None:
    api = client(sandbox())
    api.ensure_audience(AUDIENCE, "Flu reminders", "marketing")
    api.ensure_audience(AUDIENCE, "Flu reminders 2026", "marketing")  # update is fine
    members = people(10)
    results = []
    for i, chunk in enumerate(batched(members, 4)):
        results += api.upsert(AUDIENCE, chunk, idempotency_key=f"run1-upsert-{i}")
    assert [r.status for r in results] == ["ok"] * 10
    assert api.list_member_ids(AUDIENCE, page_size=3) == [m.external_id for m in members]

    bad = api.upsert(AUDIENCE, [Member("tok_bad", "no-at-sign", {})], "run1-upsert-bad")
    assert bad[0].status == "rejected" and bad[0].error_code == "ENGINE_REJECTED"

    removed = api.remove(AUDIENCE, ["tok_0000", "tok_0009"], idempotency_key="run1-remove-0")
    assert [r.status for r in removed] == ["ok", "ok"]
    assert api.list_member_ids(AUDIENCE) == [m.external_id for m in members[1:9]]


def test_unknown_audience_is_a_request_error(sandbox: Callable[..., SandboxEngine]) -> None:
    api = client(sandbox())
    with pytest.raises(EngineRequestError, match="AUDIENCE_NOT_FOUND"):
        api.upsert("no-such-audience", people(1), "k-unknown")


def test_idempotent_replay_does_not_duplicate(sandbox: Callable[..., SandboxEngine]) -> None:
    api = client(sandbox())
    api.ensure_audience(AUDIENCE, "Flu reminders", "marketing")
    first = api.upsert(AUDIENCE, people(10), "run7-batch-0")
    events = all_events(api)
    assert api.upsert(AUDIENCE, people(10), "run7-batch-0") == first
    assert all_events(api) == events
    assert sum(e.type == "sent" for e in events) == 10


def test_same_key_different_body_is_a_conflict(
    sandbox: Callable[..., SandboxEngine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = client(sandbox())
    api.ensure_audience(AUDIENCE, "Flu reminders", "marketing")
    api.upsert(AUDIENCE, people(3), "run8-batch-0")
    with pytest.raises(EngineIdempotencyConflict) as err:
        api.upsert(AUDIENCE, people(3, start=100), "run8-batch-0")
    assert err.value.code == "ENGINE_IDEMPOTENCY_CONFLICT" in REASONS
    assert err.value.status == 409
    assert "@" not in str(err.value)
    assert "@" not in caplog.text  # neither request bodies nor emails reach the logs


def test_batch_over_limit_is_refused_before_sending(sandbox: Callable[..., SandboxEngine]) -> None:
    api = client(sandbox())
    with pytest.raises(EngineBatchTooLarge):
        api.upsert(AUDIENCE, people(1001), "too-big")
    assert [len(c) for c in batched(range(2500), 1000)] == [1000, 1000, 500]


# --- events --------------------------------------------------------------------------------


def test_events_page_through_without_gaps(sandbox: Callable[..., SandboxEngine]) -> None:
    api = client(sandbox())
    api.ensure_audience(AUDIENCE, "Flu reminders", "marketing")
    members = people(40)
    for i, chunk in enumerate(batched(members, 15)):
        api.upsert(AUDIENCE, chunk, f"ev-{i}")
    paged = all_events(api, limit=9)
    whole = api.events(None, 1000).events
    assert paged == whole
    assert len({e.event_id for e in paged}) == len(paged)
    assert {e.external_id for e in paged if e.type == "sent"} == {m.external_id for m in members}
    for event in paged:
        assert event.type in EVENT_TYPES
        assert event.audience_id == AUDIENCE
        assert event.occurred_at.utcoffset() is not None
        assert "@" not in repr(event)
    tail = api.events(None, 1000).next_cursor
    assert api.events(tail, 10).events == []


def test_event_rows_are_the_events_as_rows(sandbox: Callable[..., SandboxEngine]) -> None:
    api = client(sandbox())
    api.ensure_audience(AUDIENCE, "Flu reminders", "marketing")
    api.upsert(AUDIENCE, people(12), "rows-1")
    whole = api.events(None, 1000)
    page = api.event_rows(None, 50_000)
    assert (page.read, page.unmapped, page.next_cursor) == (len(whole.events), 0, whole.next_cursor)
    as_events = [
        (i, a or "", p, t, dt.datetime.fromisoformat(w), m, b) for i, a, p, t, w, m, b in page.rows
    ]
    assert as_events == [
        (e.event_id, e.audience_id, e.external_id, e.type, e.occurred_at, e.machine_open,
         e.bounce_type)
        for e in whole.events
    ]  # fmt: skip
    assert api.event_rows(page.next_cursor, 10).rows == []


def test_event_rows_fall_back_to_small_pages_for_an_engine_that_refuses_large_ones(
    sandbox: Callable[..., SandboxEngine],
) -> None:
    api = client(sandbox())
    api.ensure_audience(AUDIENCE, "Flu reminders", "marketing")
    api.upsert(AUDIENCE, people(3), "rows-2")
    api._events_page_cap = 10**6  # as if the engine's limit were unknown: it refuses 60,000
    page = api.event_rows(None, 60_000)
    assert page.read == len(api.events(None, 1000).events) and api._events_page_cap == 1000


def test_event_rows_check_the_contract_and_count_unmapped() -> None:
    good = {"event_id": "e1", "type": "open", "external_id": "tok-1", "audience_id": "a",
            "occurred_at": "2026-03-02T09:00:00Z", "machine_open": True}  # fmt: skip
    rows, unmapped = http_api._event_rows([good, {**good, "external_id": ""}])
    assert unmapped == 1
    assert rows == [("e1", "a", "tok-1", "open", "2026-03-02T09:00:00Z", True, None)]
    for bad in (
        {**good, "occurred_at": "2026-03-02T09:00:00"},  # naive
        {**good, "occurred_at": "not a time"},
        {**good, "bounce_type": "sometimes"},
        {k: v for k, v in good.items() if k != "event_id"},
    ):
        with pytest.raises(EngineProtocolError):
            http_api._event_rows([bad])


def test_member_repr_hides_email() -> None:
    shown = repr(people(1)[0])
    assert "tok_0000" in shown and "@" not in shown and "Name0" not in shown


# --- auth ---------------------------------------------------------------------------------


def test_wrong_secret_and_stale_clock_are_auth_errors(
    sandbox: Callable[..., SandboxEngine],
) -> None:
    engine = sandbox()
    assert engine.base_url is not None
    wrong = HttpEngine(engine.base_url, TOKEN, "not-the-secret", ca_file=str(engine.ca_cert_path))
    with pytest.raises(EngineAuthError, match="AUTH_BAD_SIGNATURE") as err:
        wrong.events(None)
    assert err.value.code == "ENGINE_AUTH_FAILED" in REASONS
    stale = client(engine, clock=lambda: time.time() - 301)
    with pytest.raises(EngineAuthError, match="AUTH_STALE_TIMESTAMP"):
        stale.events(None)


# --- faults -------------------------------------------------------------------------------


def test_transient_failures_are_retried_and_applied_exactly_once(
    sandbox: Callable[..., SandboxEngine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sandbox.engine")
    sleeps = Sleeps()
    api = client(sandbox(fail_rate=0.3), max_retries=10, sleep=sleeps)
    api.ensure_audience(AUDIENCE, "Flu reminders", "marketing")
    members = people(10)
    for i, chunk in enumerate(batched(members, 1)):
        results = api.upsert(AUDIENCE, chunk, f"flaky-{i}")
        assert [r.status for r in results] == ["ok"] * len(chunk)
    ids = api.list_member_ids(AUDIENCE, page_size=3)
    assert ids == [m.external_id for m in members]  # each exactly once
    sent = [e.external_id for e in all_events(api, limit=5) if e.type == "sent"]
    assert sorted(sent) == ids  # one simulated send per member, even across lost answers
    assert sleeps.calls, "fail_rate=0.3 should have forced at least one retry"
    # The seeded faults include a write applied whose answer was lost: the retry with the
    # same Idempotency-Key is what kept it exactly-once.
    assert "dropping the answer to an applied POST" in caplog.text
    assert all(0 <= s <= api.backoff_max for s in sleeps.calls)


def test_rate_limit_waits_for_retry_after(sandbox: Callable[..., SandboxEngine]) -> None:
    sleeps = Sleeps(real=True)
    api = client(sandbox(rate_limit=2), sleep=sleeps)
    for _ in range(5):  # 5 quick calls at 2/s: at least one 429 and one honoured wait
        api.events(None, 10)
    assert sleeps.calls and all(s == 1.0 for s in sleeps.calls)


def test_retry_after_beyond_limit_defers(sandbox: Callable[..., SandboxEngine]) -> None:
    api = client(sandbox(rate_limit=1), max_retry_after=0.5)
    with pytest.raises(EngineRateLimited) as err:
        for _ in range(3):
            api.events(None, 10)
    assert err.value.code == "ENGINE_RATE_LIMITED" in REASONS
    assert isinstance(err.value, EngineUnavailable)  # callers defer both the same way


def test_unreachable_engine_raises_unavailable_after_bounded_retries(
    sandbox: Callable[..., SandboxEngine],
) -> None:
    engine = sandbox()
    sleeps = Sleeps()
    api = client(engine, max_retries=3, sleep=sleeps)
    engine.stop()  # the port is closed now: connection refused on every attempt
    with pytest.raises(EngineUnavailable) as err:
        api.upsert(AUDIENCE, people(2), "gone-0")
    assert err.value.code == "ENGINE_UNAVAILABLE"
    assert len(sleeps.calls) == 3  # 4 attempts, 3 waits between them
    assert "@" not in str(err.value) and "Name" not in str(err.value)

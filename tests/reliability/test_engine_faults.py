"""Syncs against an engine that fails: 500s, 429s, slow and silent answers, dropped
connections, answers lost after the write was applied, and an engine that is gone. Every
member must reach the engine exactly once, and the ledger must settle every row."""

from __future__ import annotations

import pytest

from connectors.email.errors import EngineUnavailable
from connectors.email.http_api import HttpEngine
from services.sync import CONCURRENCY, sync_audience
from tests.reliability.conftest import ENGINE_SECRET, ENGINE_TOKEN
from tests.reliability.fault_proxy import FAULTS, FaultProxy, rotating_plan
from tests.reliability.support import (
    BULK_AUDIENCE,
    CountingDelivery,
    Databases,
    add_bulk_audience,
    delivery_report,
)


def _client(base_url: str, ca_file: str, **options) -> HttpEngine:
    settings = {"timeout": 0.8, "max_retries": 25, "backoff_base": 0.005, "backoff_max": 0.05}
    settings.update(options)
    return HttpEngine(base_url, ENGINE_TOKEN, ENGINE_SECRET, ca_file, **settings)


def _proxy(engine, plan) -> FaultProxy:
    proxy = FaultProxy(
        engine.base_url,
        str(engine.ca_cert_path),
        str(engine.tls.cert_path),
        str(engine.tls.key_path),
        plan,
    )
    proxy.start()
    return proxy


def _sync(warehouse, engine_api, cipher, batch_size: int):
    with warehouse.connect() as conn:
        return sync_audience(
            conn,
            engine_api,
            cipher,
            destination="sandbox",
            audience=BULK_AUDIENCE,
            batch_size=batch_size,
        )


def _assert_exactly_once(warehouse, engine, delivery, people, figures, faults: int) -> None:
    api = _client(engine.base_url, str(engine.ca_cert_path))
    with warehouse.connect() as conn:
        report = delivery_report(
            conn, api.list_member_ids(BULK_AUDIENCE), delivery.of(BULK_AUDIENCE), BULK_AUDIENCE,
            set(people),
        )  # fmt: skip
    figures.add("engine_faults_injected", faults)
    figures.add("members_delivered_under_faults", report.at_engine)
    figures.add("members_lost", report.lost)
    figures.add("members_duplicated", report.duplicated)
    assert report.lost == 0 and report.duplicated == 0, report
    assert report.extra_at_engine == 0, report
    assert report.pending_ledger_rows == 0, report
    assert report.people_not_acked_once == 0, report


def test_every_kind_of_engine_failure_still_delivers_each_member_once(
    databases: Databases, built_template, cipher, sandbox, figures
):
    warehouse = databases.create("rel_engine_faults", template=built_template)
    with warehouse.connect() as conn:
        people = add_bulk_audience(conn, cipher, 400)
    delivery = CountingDelivery()
    engine = sandbox(delivery=delivery)
    proxy = _proxy(engine, rotating_plan(every=3))
    try:
        result = _sync(warehouse, _client(proxy.base_url, str(engine.ca_cert_path)), cipher, 20)
    finally:
        proxy.stop()
    assert result.added == len(people)
    assert set(proxy.injected) == set(FAULTS), proxy.injected  # every kind happened
    _assert_exactly_once(warehouse, engine, delivery, people, figures, sum(proxy.injected.values()))


def test_engine_gone_mid_sync_defers_cleanly_then_resumes_exactly_once(
    databases: Databases, built_template, cipher, sandbox, figures
):
    warehouse = databases.create("rel_engine_gone", template=built_template)
    with warehouse.connect() as conn:
        people = add_bulk_audience(conn, cipher, 300)
    delivery = CountingDelivery()
    engine = sandbox(delivery=delivery)
    calls = {"n": 0}

    def plan(method: str) -> str:
        calls["n"] += 1
        if calls["n"] == 6:  # a few batches in, the engine disappears
            proxy.down = True
        return "pass"

    proxy = _proxy(engine, plan)
    try:
        api = _client(proxy.base_url, str(engine.ca_cert_path), max_retries=3)
        with pytest.raises(EngineUnavailable) as failure:
            _sync(warehouse, api, cipher, 25)
        message = str(failure.value)
        assert failure.value.code == "ENGINE_UNAVAILABLE"
        assert "@" not in message and "tbulk" not in message  # no address, no token
        with warehouse.connect() as conn:
            status, code = conn.execute(
                "select status, error_code from activation.sync_runs"
                " where audience = %s order by started_at desc limit 1",
                (BULK_AUDIENCE,),
            ).fetchone()
            pending = conn.execute(
                "select count(*) from activation.ledger where status = 'pending'"
            ).fetchone()[0]
        assert (status, code) == ("failed", "ENGINE_UNAVAILABLE")
        assert pending <= 25 * CONCURRENCY  # only the batches in flight wait for the next run
        proxy.down = False
        _sync(warehouse, _client(proxy.base_url, str(engine.ca_cert_path)), cipher, 25)
    finally:
        proxy.stop()
    _assert_exactly_once(warehouse, engine, delivery, people, figures, proxy.injected["down"])


def test_rate_limited_engine_is_waited_for_not_flooded(
    databases: Databases, built_template, cipher, sandbox, figures
):
    """The SANDBOX's own limiter answers 429 with Retry-After; the sync waits and completes."""
    warehouse = databases.create("rel_engine_429", template=built_template)
    with warehouse.connect() as conn:
        people = add_bulk_audience(conn, cipher, 120)
    delivery = CountingDelivery()
    engine = sandbox(delivery=delivery, rate_limit=4)
    retries = []
    api = _client(engine.base_url, str(engine.ca_cert_path), sleep=_recording_sleep(retries))
    _sync(warehouse, api, cipher, 10)
    assert retries, "a 4 requests/s limit should have answered 429 at least once"
    _assert_exactly_once(warehouse, engine, delivery, people, figures, len(retries))


def _recording_sleep(calls: list[float]):
    import time

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        time.sleep(seconds)

    return sleep


def _bulk_sync_with_transient_failures(databases, built_template, cipher, sandbox, figures, n):
    warehouse = databases.create(f"rel_bulk_{n}", template=built_template)
    with warehouse.connect() as conn:
        people = add_bulk_audience(conn, cipher, n)
    delivery = CountingDelivery()
    engine = sandbox(delivery=delivery, fail_rate=0.05, seed=17)
    failures: list[float] = []
    api = _client(
        engine.base_url, str(engine.ca_cert_path), timeout=30, sleep=_recording_sleep(failures)
    )
    result = _sync(warehouse, api, cipher, 25 if n < 10_000 else 1000)
    assert result.added == n
    assert failures, "a 5% failure rate should have failed some request"
    _assert_exactly_once(warehouse, engine, delivery, people, figures, len(failures))
    figures.add(f"bulk_sync_{n}_members_delivered", n)
    databases.drop(f"rel_bulk_{n}")


def test_2k_contacts_with_5_percent_transient_failures_arrive_exactly_once(
    databases, built_template, cipher, sandbox, figures
):
    _bulk_sync_with_transient_failures(databases, built_template, cipher, sandbox, figures, 2000)


@pytest.mark.soak
def test_100k_contacts_with_5_percent_transient_failures_arrive_exactly_once(
    databases, built_template, cipher, sandbox, figures
):
    _bulk_sync_with_transient_failures(databases, built_template, cipher, sandbox, figures, 100_000)

"""Run-failure alerts reach a real HTTP server on loopback, as JSON without any PHI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from pipelines.notifications import AlertWebhookResource, alert_on_run_failure, check_webhook_url

CANARY_EMAIL = "jane.canary@example.org"
CANARY_NAME = "Canary^Jane"


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(
            {"content_type": self.headers["Content-Type"], "body": json.loads(body)}
        )
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/alerts", received
    finally:
        server.shutdown()
        server.server_close()


@dg.asset
def push_to_engine() -> None:
    # An error message carrying record values, as a careless library might raise.
    raise RuntimeError(f"ENGINE_UNAVAILABLE while sending to {CANARY_EMAIL} ({CANARY_NAME})")


def test_a_failed_run_posts_a_phi_free_summary_to_the_webhook(webhook):
    url, received = webhook
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([push_to_engine], instance=instance, raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alert_webhook": AlertWebhookResource(url=url, dagster_url="https://dg.test")},
    ).for_run_failure()
    alert_on_run_failure(context)

    (posted,) = received
    payload = posted["body"]
    assert posted["content_type"] == "application/json"
    assert payload["run_id"] == result.run_id
    assert payload["failed_steps"] == ["push_to_engine"]
    assert "RuntimeError" in payload["error_types"]
    assert set(payload["reason_codes"]) == {"ENGINE_UNAVAILABLE"}
    assert payload["run_url"] == f"https://dg.test/runs/{result.run_id}"
    assert "ENGINE_UNAVAILABLE" in payload["text"] and result.run_id in payload["text"]
    serialized = json.dumps(payload)
    for canary in (CANARY_EMAIL, CANARY_NAME, "jane"):
        assert canary not in serialized.lower()


def test_without_a_webhook_the_alert_is_only_logged(webhook):
    _, received = webhook
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([push_to_engine], instance=instance, raise_on_error=False)
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alert_webhook": AlertWebhookResource(url=None)},
    ).for_run_failure()
    alert_on_run_failure(context)
    assert received == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.slack.com/services/T/B/X", True),
        ("http://127.0.0.1:9000/hook", True),
        ("http://localhost/hook", True),
        ("http://hooks.example.org/hook", False),
        ("ftp://hooks.example.org/hook", False),
    ],
)
def test_alerts_leave_only_over_https_except_to_loopback(url, allowed):
    if allowed:
        check_webhook_url(url)
    else:
        with pytest.raises(ValueError, match="https"):
            check_webhook_url(url)


def test_the_failure_sensor_is_registered_and_watches_the_code_location(ops_defs):
    sensor = ops_defs.resolve_sensor_def("alert_on_run_failure")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert "alert_webhook" in sensor.required_resource_keys

"""Run-failure notifications: a PHI-free JSON message to a webhook (Slack, Teams, a pager).

The payload names the job, run id, failed steps, failed checks, error types and any reason
codes from domain/reasons.py found in the errors, with the catalogue's advice. It never
carries an error message, a partition key (a file name) or config: those can hold record
values. Slack and Teams incoming webhooks read the `text` field; the rest is for machines.
The URL comes from HUB_ALERT_WEBHOOK_URL; plain http is refused except to loopback.
"""

import ipaddress
import json
import re
import urllib.request
from typing import Any
from urllib.parse import urlparse

import dagster as dg

from domain.reasons import REASONS

REASON_CODE = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
TIMEOUT_SECONDS = 10


class AlertWebhookResource(dg.ConfigurableResource):
    """Where failure alerts go (HUB_ALERT_WEBHOOK_URL); None: alerts are only logged."""

    url: str | None = None
    dagster_url: str | None = None  # e.g. https://dagster.example.org, for a link to the run

    def post(self, payload: dict[str, Any]) -> int:
        """POST the payload as JSON; returns the HTTP status."""
        if not self.url:
            raise ValueError("no webhook URL configured (HUB_ALERT_WEBHOOK_URL)")
        check_webhook_url(self.url)
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "audience-hub-alerts"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status


def check_webhook_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http" and _is_loopback(parsed.hostname or ""):
        return
    raise ValueError("the alert webhook must be https:// (plain http only to loopback)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def failure_payload(
    instance: dg.DagsterInstance, run: dg.DagsterRun, dagster_url: str | None = None
) -> dict[str, Any]:
    """What went wrong in `run`, from its event log, without any message text."""
    failed_steps: list[str] = []
    error_types: list[str] = []
    codes: set[str] = set()
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        if event is None:
            continue
        if event.step_key and event.step_key not in failed_steps:
            failed_steps.append(event.step_key)
        error = event.step_failure_data.error if event.step_failure_data else None
        while error is not None:
            if error.cls_name not in error_types:
                error_types.append(error.cls_name)
            codes |= {code for code in REASON_CODE.findall(error.message) if code in REASONS}
            error = error.cause
    failed_checks = []
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data if record.dagster_event else None
        if evaluation is not None and not evaluation.passed:
            failed_checks.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
    run_url = f"{dagster_url.rstrip('/')}/runs/{run.run_id}" if dagster_url else None
    advice = {code: REASONS[code] for code in sorted(codes)}
    summary = f"audience-hub: run of {run.job_name} failed"
    if failed_steps:
        summary += f" at {', '.join(failed_steps)}"
    if failed_checks:
        summary += f"; blocking checks failed: {', '.join(failed_checks)}"
    if advice:
        summary += ". " + " ".join(f"{code}: {text}" for code, text in advice.items())
    summary += f". Open run {run.run_id} in Dagster" + (f": {run_url}" if run_url else ".")
    return {
        "text": summary,
        "source": "audience-hub",
        "job": run.job_name,
        "run_id": run.run_id,
        "status": "FAILURE",
        "failed_steps": failed_steps,
        "failed_checks": failed_checks,
        "error_types": error_types,
        "reason_codes": advice,
        "run_url": run_url,
    }


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    description="Posts a PHI-free summary of every failed run to HUB_ALERT_WEBHOOK_URL.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def alert_on_run_failure(
    context: dg.RunFailureSensorContext, alert_webhook: AlertWebhookResource
) -> None:
    payload = failure_payload(context.instance, context.dagster_run, alert_webhook.dagster_url)
    if not alert_webhook.url:
        context.log.info(f"no HUB_ALERT_WEBHOOK_URL set; not sent: {payload['text']}")
        return
    status = alert_webhook.post(payload)
    context.log.info(f"alert for run {context.dagster_run.run_id} posted (HTTP {status})")

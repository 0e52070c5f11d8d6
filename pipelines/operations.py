"""Everything for running the hub day to day, gathered for definitions.py to add in one place:
journeys, the report and per-file ingest (assets), the consent gate and freshness checks,
the operational jobs, schedules, sensors and the run-failure alert."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from assets.consent_checks import consent_gate_check
from assets.file_drops import inbound_files
from assets.freshness_checks import freshness_checks
from assets.journeys import journey_assets
from assets.report import campaign_report
from pipelines.jobs import operations_jobs
from pipelines.notifications import AlertWebhookResource, alert_on_run_failure
from pipelines.schedules import operations_schedules
from pipelines.sensors import operations_sensors


@dataclass
class Operations:
    assets: list = field(default_factory=list)
    asset_checks: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    schedules: list = field(default_factory=list)
    sensors: list = field(default_factory=list)
    resources: dict[str, object] = field(default_factory=dict)


def operations() -> Operations:
    return Operations(
        assets=[inbound_files, *journey_assets, campaign_report],
        asset_checks=[consent_gate_check, *freshness_checks],
        jobs=list(operations_jobs),
        schedules=list(operations_schedules),
        sensors=[*operations_sensors, alert_on_run_failure],
        resources={
            "alert_webhook": AlertWebhookResource(
                url=dg.EnvVar("HUB_ALERT_WEBHOOK_URL").get_value() or None,
                dagster_url=dg.EnvVar("HUB_DAGSTER_URL").get_value() or None,
            )
        },
    )

"""The Dagster code location: one Definitions, built lazily when the location loads."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

from assets.activate import audience_syncs
from assets.dbt import build_dbt_assets
from assets.feedback import engagement_events, engagement_history, suppression_list
from assets.ingest import ingest_assets, ingest_checks
from assets.privacy_checks import privacy_checks
from assets.protect import person_xref
from pipelines.dbt_project import dbt_project
from pipelines.operations import operations
from pipelines.resources import (
    EmailEngineResource,
    InboundResource,
    PrivacyResource,
    WarehouseResource,
)


def resources() -> dict[str, object]:
    """Resources from the environment: DATABASE_URL and HUB_ENGINE_* select real systems."""
    return {
        "warehouse": WarehouseResource(
            database_url=dg.EnvVar("DATABASE_URL").get_value() or None,
        ),
        "privacy": PrivacyResource(),
        "inbound": InboundResource(root=dg.EnvVar("HUB_INBOUND").get_value() or None),
        "email_engine": EmailEngineResource(
            destination=dg.EnvVar("HUB_ENGINE_DESTINATION").get_value() or "sandbox",
            base_url=dg.EnvVar("HUB_ENGINE_URL").get_value() or None,
            token=dg.EnvVar("HUB_ENGINE_TOKEN").get_value() or None,
            signing_secret=dg.EnvVar("HUB_ENGINE_SIGNING_SECRET").get_value() or None,
            ca_file=dg.EnvVar("HUB_ENGINE_CA_FILE").get_value() or None,
        ),
        # The dbt installed beside this Python, whether or not the venv is on PATH.
        "dbt": DbtCliResource(
            project_dir=dbt_project(), dbt_executable=str(Path(sys.executable).parent / "dbt")
        ),
    }


def build_definitions(resource_overrides: dict[str, object] | None = None) -> dg.Definitions:
    all_assets = [
        *ingest_assets,
        person_xref,
        *build_dbt_assets(),
        audience_syncs,
        suppression_list,
        engagement_history,
        engagement_events,
    ]
    everything = dg.define_asset_job(
        "full_pipeline",
        selection=dg.AssetSelection.all()
        - dg.AssetSelection.keys("suppression_list", "engagement_history", "inbound_files"),
        description="Ingest, protect, model, activate and read feedback, end to end.",
    )
    audience_sync_job = dg.define_asset_job(
        "audience_sync",
        selection=dg.AssetSelection.assets(audience_syncs),
        description="Sync audiences to the engine; set dry_run in the launchpad to preview.",
    )
    nightly = dg.ScheduleDefinition(
        name="nightly_full_pipeline", job=everything, cron_schedule="0 2 * * *"
    )
    ops = operations()  # schedules, sensors, checks, journeys, report (pipelines/operations.py)
    return dg.Definitions(
        assets=[*all_assets, *ops.assets],
        asset_checks=[*ingest_checks, *ops.asset_checks, *privacy_checks],
        jobs=[everything, audience_sync_job, *ops.jobs],
        schedules=[nightly, *ops.schedules],
        sensors=ops.sensors,
        resources={**resources(), **ops.resources, **(resource_overrides or {})},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()

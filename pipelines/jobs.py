"""Jobs for running the hub day to day (beside full_pipeline and audience_sync).

- incremental: everything audiences depend on, then the sync. Cheap to run hourly: ingest
  skips files already loaded (by content hash), dbt rebuilds the small marts, and the sync
  pushes only the diff. The consent_gate check runs before the sync and blocks it.
- consent_fast_path: rebuild only the consent models on the way to the audiences, check the
  gate, and sync the affected audiences (mirror mode, so revoked people are removed).
- ingest_file: one inbound file (a dynamic partition), for the new-files sensor.
- engagement_feedback: read engine events and rebuild the engagement marts.
- journeys: read engine events, advance every journey, rebuild the journey marts and report.
- report: the HTML campaign report alone.
"""

from __future__ import annotations

import dagster as dg

from assets.file_drops import inbound_files, inbound_files_partitions

NOT_MATERIALIZABLE = dg.AssetSelection.keys("suppression_list", "engagement_history")
SYNCS = dg.AssetSelection.keys("audience_syncs")
EVENTS = dg.AssetSelection.keys("engagement_events")
JOURNEYS = dg.AssetSelection.groups("journeys")
CONSENT_EVENTS = dg.AssetSelection.keys(dg.AssetKey(["intermediate", "int_consent_events"]))
FILE_DROPS = dg.AssetSelection.assets(inbound_files)

incremental_job = dg.define_asset_job(
    "incremental",
    selection=SYNCS.upstream() - NOT_MATERIALIZABLE - FILE_DROPS,
    description="New files, identity resolution, dbt (audience path) and a diff sync.",
)
consent_fast_path_job = dg.define_asset_job(
    "consent_fast_path",
    selection=(CONSENT_EVENTS.downstream() & SYNCS.upstream()) | SYNCS,
    description="Rebuild consent state and audiences, then sync the affected audiences.",
    tags={"hub/trigger": "consent"},
)
ingest_file_job = dg.define_asset_job(
    "ingest_file",
    selection=FILE_DROPS,
    partitions_def=inbound_files_partitions,
    description="Ingest one inbound file (partition = its URI).",
)
engagement_feedback_job = dg.define_asset_job(
    "engagement_feedback",
    selection=EVENTS.downstream() - JOURNEYS.downstream(),
    description="Read engine events and rebuild the engagement marts.",
)
journeys_job = dg.define_asset_job(
    "journeys",
    selection=EVENTS.downstream(),
    description="Read engine events, advance journeys, rebuild journey marts and the report.",
)
report_job = dg.define_asset_job(
    "report",
    selection=dg.AssetSelection.keys("campaign_report"),
    description="Render the HTML campaign report from the marts.",
)

operations_jobs = [
    incremental_job,
    consent_fast_path_job,
    ingest_file_job,
    engagement_feedback_job,
    journeys_job,
    report_job,
]

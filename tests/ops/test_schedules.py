"""Schedules, sensors and jobs are registered as `dagster dev` would show them."""

from __future__ import annotations

import dagster as dg


def test_nightly_full_build_and_hourly_incremental_are_scheduled(ops_defs):
    schedules = {s.name: s for s in ops_defs.schedules}
    assert schedules["nightly_full_pipeline"].job_name == "full_pipeline"
    assert schedules["hourly_incremental"].job_name == "incremental"
    assert schedules["hourly_incremental"].cron_schedule == "15 * * * *"
    assert schedules["journeys_hourly"].job_name == "journeys"
    context = dg.build_schedule_context(scheduled_execution_time=None)
    (request,) = schedules["hourly_incremental"].evaluate_tick(context).run_requests
    assert request.run_config == {}


def test_sensors_target_their_jobs(ops_defs):
    targets = {
        "inbound_files_sensor": "ingest_file",
        "engine_events_sensor": "engagement_feedback",
        "consent_fast_path_sensor": "consent_fast_path",
    }
    for sensor_name, job_name in targets.items():
        assert ops_defs.resolve_sensor_def(sensor_name).job_name == job_name


def test_the_incremental_job_means_new_files_dbt_and_sync_but_no_feedback(ops_defs):
    job = ops_defs.resolve_job_def("incremental")
    keys = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {"landing/fhir/patients", "person_xref", "marts/audience_membership"} <= keys
    assert "audience_syncs" in keys
    assert not keys & {"engagement_events", "inbound_files", "campaign_report"}
    assert not any(k.startswith("journeys/") for k in keys)

"""Schedules: the nightly full build sits in definitions.py; these add the daytime cadence.

- hourly_incremental (minute 15): new files, identity, dbt on the audience path, diff sync
  (see pipelines/jobs.py for why that is cheap). Consent changes do not wait for it: the
  consent fast path sensor reacts within a tick.
- journeys_hourly (minute 45): read engine events, advance every journey by the hour that
  passed, rebuild the journey marts and the report.

Times are UTC. Like every schedule and sensor they start stopped; turn them on in the
Dagster UI (Automation) or with `dagster schedule start`.
"""

from __future__ import annotations

import dagster as dg

from pipelines.jobs import incremental_job, journeys_job

hourly_incremental = dg.ScheduleDefinition(
    name="hourly_incremental",
    job=incremental_job,
    cron_schedule="15 * * * *",
    description="Hourly: new files, identity, dbt (audience path) and a diff sync.",
)
journeys_hourly = dg.ScheduleDefinition(
    name="journeys_hourly",
    job=journeys_job,
    cron_schedule="45 * * * *",
    description="Hourly: engine events in, journeys advanced, journey marts and report rebuilt.",
)

operations_schedules = [hourly_incremental, journeys_hourly]

"""Source freshness: has each source system delivered a file lately, has the engine been read?

Dagster's last-update freshness checks watch materializations, but the hourly schedule
materializes the ingest assets whether or not anything arrived; what operators need to know
is when a source last *delivered*. So these read landing.source_files (when each source's
newest file was loaded) and engagement.cursors (when engine feedback was last read).
Warnings, not blockers: a quiet source is worth a look, not worth stopping sends.
Thresholds: HUB_SOURCE_MAX_AGE_HOURS (default 26, a nightly drop plus slack) and
HUB_FEEDBACK_MAX_AGE_HOURS (default 26).
"""

import os
from datetime import UTC, datetime

import dagster as dg

from assets.ingest import SOURCE_TABLES, landing_key
from pipelines.resources import WarehouseResource


def _max_age_hours(variable: str) -> float:
    return float(os.environ.get(variable) or 26)


def _result(last: datetime | None, limit_hours: float, what: str) -> dg.AssetCheckResult:
    if last is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"no {what} yet: check the drop location / engine connection",
            metadata={"max_age_hours": limit_hours},
        )
    age_hours = (datetime.now(UTC) - last).total_seconds() / 3600
    passed = age_hours <= limit_hours
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if passed
        else f"last {what} {age_hours:.1f} h ago (limit {limit_hours:g} h): ask the sender",
        metadata={
            "last_at": dg.MetadataValue.timestamp(last),
            "age_hours": round(age_hours, 2),
            "max_age_hours": limit_hours,
        },
    )


def _source_freshness(source: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=landing_key(source, SOURCE_TABLES[source][0]),
        name=f"{source}_freshness",
        description=f"A {source} file was loaded within HUB_SOURCE_MAX_AGE_HOURS (default 26).",
    )
    def freshness(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            (last,) = conn.execute(
                "select max(loaded_at) from landing.source_files where source = %s", (source,)
            ).fetchone()
        return _result(last, _max_age_hours("HUB_SOURCE_MAX_AGE_HOURS"), f"{source} file")

    return freshness


@dg.asset_check(
    asset="engagement_events",
    name="feedback_freshness",
    description="Engine feedback was read within HUB_FEEDBACK_MAX_AGE_HOURS (default 26).",
)
def feedback_freshness(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.warehouse().connect() as conn:
        (last,) = conn.execute("select max(updated_at) from engagement.cursors").fetchone()
    return _result(last, _max_age_hours("HUB_FEEDBACK_MAX_AGE_HOURS"), "engine feedback read")


freshness_checks = [*(_source_freshness(source) for source in SOURCE_TABLES), feedback_freshness]

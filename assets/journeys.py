"""Journeys: one tick of every journey in journeys/*.yaml (enter, exit, advance, send).

Writes journeys.steps (the loaded definitions), journeys.positions (where each person is),
journeys.step_log (every step entered and how it ended) and journeys.sends (the send
ledger); the dbt models in marts/journeys turn them into per-step metrics.
"""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from pipelines.resources import EmailEngineResource, PrivacyResource, WarehouseResource
from services.journeys import journeys_dir, load, run_journeys

JOURNEY_TABLES = {
    "steps": "Journey steps as loaded from journeys/*.yaml (validated: a DAG, known steps).",
    "positions": "Where each person is in each journey (active, completed or exited).",
    "step_log": "Every step each person entered, when it was completed or left, and how.",
    "sends": "Messages journey steps sent (ledger: pending before the push, acked after).",
}
UPSTREAM = [
    dg.AssetKey(["marts", "audience_membership"]),
    dg.AssetKey(["marts", "segment_catalog"]),
    dg.AssetKey(["marts", "dim_persons"]),
    dg.AssetKey(["intermediate", "int_consent_events"]),
    dg.AssetKey(["intermediate", "int_observations"]),
    dg.AssetKey(["intermediate", "int_appointments"]),
    dg.AssetKey(["intermediate", "int_encounters"]),
    dg.AssetKey("engagement_events"),
    dg.AssetKey("suppression_list"),
]


class JourneyConfig(dg.Config):
    journeys: list[str] = []  # journey names; empty: every file in the journeys folder
    directory: str = ""  # empty: HUB_JOURNEYS_DIR, else the repository's journeys/
    as_of: str = ""  # ISO timestamp the tick evaluates at (back-fills); empty: now


def journey_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["journeys", table])


@dg.multi_asset(
    name="journey_tick",
    group_name="journeys",
    specs=[
        dg.AssetSpec(journey_key(table), description=text, deps=UPSTREAM)
        for table, text in JOURNEY_TABLES.items()
    ],
)
def journey_tick(
    context: dg.AssetExecutionContext,
    config: JourneyConfig,
    warehouse: WarehouseResource,
    privacy: PrivacyResource,
    email_engine: EmailEngineResource,
):
    from pipelines.report import chart_markdown, journey_funnel_chart

    directory = Path(config.directory) if config.directory else journeys_dir()
    definitions = load(directory, config.journeys)
    now = datetime.fromisoformat(config.as_of) if config.as_of else datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    with warehouse.warehouse().connect() as conn:
        ticks = run_journeys(
            conn,
            email_engine.engine(),
            privacy.vault_cipher(),
            definitions,
            destination=email_engine.destination,
            now=now,
        )
        funnel = conn.execute(
            "select l.journey, l.step, s.step_order, count(*) from journeys.step_log l"
            " join journeys.steps s using (journey, step) group by 1, 2, 3 order by 1, 3"
        ).fetchall()
    for tick in ticks:
        context.log.info(f"journey {tick.journey}: {tick.as_dict()}")
    summary = {tick.journey: tick.as_dict() for tick in ticks}
    totals = {
        "journeys": len(ticks),
        "entered": sum(t.entered for t in ticks),
        "sent": sum(t.sent for t in ticks),
        "completed": sum(t.completed for t in ticks),
        "active": sum(t.active for t in ticks),
    }
    # Counts per journey and step only: no person tokens in Dagster metadata.
    yield dg.MaterializeResult(
        asset_key=journey_key("positions"),
        metadata={
            **totals,
            "by_journey": summary,
            "entries_by_step": dg.MetadataValue.md(
                chart_markdown(journey_funnel_chart(funnel), "Entries per journey step")
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key=journey_key("steps"),
        metadata={"journeys": [j.name for j in definitions], "directory": str(directory)},
    )
    yield dg.MaterializeResult(asset_key=journey_key("step_log"), metadata=totals)
    yield dg.MaterializeResult(asset_key=journey_key("sends"), metadata={"sent": totals["sent"]})


journey_assets = [journey_tick]

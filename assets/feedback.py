"""Feedback: engagement events read back from the engine into engagement.*."""

import dagster as dg

from assets.retries import IO_RETRY
from pipelines.resources import EmailEngineResource, WarehouseResource
from services.feedback import read_feedback

# Unsubscribes, complaints and hard bounces, written by the feedback step and read by dbt's
# consent model and the send-time gate. Declared as its own asset so the lineage shows it
# without closing a loop (consent -> audience -> sync -> feedback -> consent).
suppression_list = dg.AssetSpec(
    "suppression_list",
    group_name="feedback",
    description="engagement.suppressions: unsubscribes, complaints and hard bounces.",
)

# Engagement history as behavioral segments read it (opens and clicks of past campaigns):
# the same table as engagement_events, declared apart so a behavioral segment can sit
# upstream of activation without a cycle through this run's feedback.
engagement_history = dg.AssetSpec(
    "engagement_history",
    group_name="feedback",
    description="engagement.events as of the last feedback read, for behavioral segments.",
)


@dg.asset(
    group_name="feedback",
    retry_policy=IO_RETRY,
    deps=["audience_syncs"],
    description="Engine events (sent, delivered, open, click, bounce, complaint, unsubscribe).",
)
def engagement_events(
    warehouse: WarehouseResource, email_engine: EmailEngineResource
) -> dg.MaterializeResult:
    with warehouse.warehouse().connect() as conn:
        result = read_feedback(conn, email_engine.engine(), email_engine.destination)
    return dg.MaterializeResult(metadata=result.as_dict())

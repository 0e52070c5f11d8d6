"""Activation: push each consent-filtered audience to the email engine (diff sync)."""

from datetime import date

import dagster as dg

from assets.retries import IO_RETRY
from pipelines.resources import EmailEngineResource, PrivacyResource, WarehouseResource
from services.sync import sync_audiences


class SyncConfig(dg.Config):
    audiences: list[str] = []  # empty: every audience in marts.segment_catalog
    mode: str = "mirror"  # upsert | mirror | append
    dry_run: bool = False
    evaluation_date: str = ""  # YYYY-MM-DD; empty: today


@dg.asset(
    group_name="activate",
    retry_policy=IO_RETRY,
    deps=[
        dg.AssetKey(["marts", "audience_membership"]),
        dg.AssetKey(["marts", "segment_catalog"]),
        # The sync compares each member's consent through this digest (services/sync.py).
        dg.AssetKey(["intermediate", "int_consent_digests"]),
    ],
    description="Audiences synced to the email engine; ledger and sync state in activation.*.",
)
def audience_syncs(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    warehouse: WarehouseResource,
    privacy: PrivacyResource,
    email_engine: EmailEngineResource,
) -> dg.MaterializeResult:
    day = date.fromisoformat(config.evaluation_date) if config.evaluation_date else None
    engine = email_engine.engine()
    totals = {"added": 0, "updated": 0, "removed": 0, "excluded": 0, "rejected": 0}
    per_audience = {}
    with warehouse.warehouse().connect() as conn:
        audiences = config.audiences or [
            name
            for (name,) in conn.execute(
                "select audience from marts.segment_catalog order by audience"
            )
        ]
        for result in sync_audiences(
            conn,
            engine,
            privacy.vault_cipher(),
            audiences,
            destination=email_engine.destination,
            day=day,
            mode=config.mode,
            dry_run=config.dry_run,
        ):
            summary = result.as_dict()
            per_audience[result.audience] = {k: summary[k] for k in totals}
            for key in totals:
                totals[key] += summary[key]
            context.log.info(f"synced {result.audience}: {per_audience[result.audience]}")
    return dg.MaterializeResult(
        metadata={
            **totals,
            "audiences": per_audience,
            "dry_run": config.dry_run,
            "destination": email_engine.destination,
        }
    )

"""Ingest assets: one per source system; files from the inbound folder or explicit URIs.

Each file is protected in-stream and loaded whole or not at all (see services.ingest); the
reconciliation check proves read = loaded + quarantined for every file of the source.
"""

from __future__ import annotations

from collections import Counter

import dagster as dg

from pipelines.resources import InboundResource, PrivacyResource, WarehouseResource
from services.ingest import ingest_uris


class IngestConfig(dg.Config):
    uris: list[str] = []  # empty: every file under the inbound folder for this source
    fhir_mode: str = "fast"  # fast | strict


def _ingest(
    context: dg.AssetExecutionContext,
    source: str,
    config: IngestConfig,
    warehouse: WarehouseResource,
    privacy: PrivacyResource,
    inbound: InboundResource,
) -> dg.MaterializeResult:
    uris = config.uris or inbound.files(source)
    with warehouse.warehouse().connect() as conn:
        results = ingest_uris(conn, uris, privacy.protector(), source, config.fhir_mode)
    reasons: Counter = Counter()
    for result in results:
        reasons.update(result.quarantined_by_reason)
        context.log.info(
            f"{source} file {result.file_id}: read {result.read}, loaded {result.loaded},"
            f" quarantined {result.quarantined}{' (already loaded)' if result.skipped else ''}"
        )
    return dg.MaterializeResult(
        metadata={
            "files": len(results),
            "files_skipped": sum(r.skipped for r in results),
            "records_read": sum(r.read for r in results),
            "records_loaded": sum(r.loaded for r in results),
            "records_quarantined": sum(r.quarantined for r in results),
            "quarantined_by_reason": dict(reasons),
        }
    )


def _reconciliation_check(source: str, asset_key: str):
    @dg.asset_check(asset=asset_key, name="reconciliation", blocking=True)
    def reconciliation(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            unbalanced = conn.execute(
                "select count(*) from landing.source_files where source = %s"
                " and records_read <> records_loaded + records_quarantined",
                (source,),
            ).fetchone()[0]
            files = conn.execute(
                "select count(*) from landing.source_files where source = %s", (source,)
            ).fetchone()[0]
        return dg.AssetCheckResult(
            passed=unbalanced == 0,
            metadata={"files": files, "files_not_reconciling": unbalanced},
        )

    return reconciliation


@dg.asset(group_name="ingest", description="FHIR R4 resources landed (PHI protected).")
def landing_fhir(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    warehouse: WarehouseResource,
    privacy: PrivacyResource,
    inbound: InboundResource,
) -> dg.MaterializeResult:
    return _ingest(context, "fhir", config, warehouse, privacy, inbound)


@dg.asset(group_name="ingest", description="HL7 v2 messages landed (PHI protected).")
def landing_hl7(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    warehouse: WarehouseResource,
    privacy: PrivacyResource,
    inbound: InboundResource,
) -> dg.MaterializeResult:
    return _ingest(context, "hl7", config, warehouse, privacy, inbound)


@dg.asset(group_name="ingest", description="CRM/CDP contact exports landed (PHI protected).")
def landing_crm(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    warehouse: WarehouseResource,
    privacy: PrivacyResource,
    inbound: InboundResource,
) -> dg.MaterializeResult:
    return _ingest(context, "crm", config, warehouse, privacy, inbound)


ingest_assets = [landing_fhir, landing_hl7, landing_crm]
ingest_checks = [
    _reconciliation_check(source, f"landing_{source}") for source in ("fhir", "hl7", "crm")
]

"""Ingest assets: one multi-asset per source system, one asset key per landing table it feeds.

Each file is protected in-stream and loaded whole or not at all (see services.ingest); the
reconciliation check proves read = loaded + quarantined for every file of the source.
"""

from collections import Counter

import dagster as dg

from assets.retries import IO_RETRY
from pipelines.resources import InboundResource, PrivacyResource, WarehouseResource
from services.ingest import ingest_uris

# Landing tables each source system writes (the dbt sources point at these asset keys).
SOURCE_TABLES = {
    "fhir": [
        "patients",
        "conditions",
        "encounters",
        "observations",
        "medication_requests",
        "immunizations",
        "procedures",
        "appointments",
        "consents",
    ],
    "hl7": ["patients", "observations", "immunizations", "appointments", "encounters", "merges"],
    "crm": ["contacts"],
}
DESCRIPTIONS = {
    "fhir": "FHIR R4 resources (bulk NDJSON, Bundles)",
    "hl7": "HL7 v2 messages (ADT, ORU, SIU, VXU)",
    "crm": "CRM/CDP contact exports (CSV, JSONL, Parquet)",
}


class IngestConfig(dg.Config):
    uris: list[str] = []  # empty: every file under the inbound folder for this source
    fhir_mode: str = "fast"  # fast | strict


def landing_key(source: str, table: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", source, table])


def _build_ingest_asset(source: str) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name=f"landing_{source}",
        group_name="ingest",
        retry_policy=IO_RETRY,
        specs=[
            dg.AssetSpec(
                landing_key(source, table),
                description=f"landing.{table} rows from {DESCRIPTIONS[source]}, PHI protected.",
            )
            for table in SOURCE_TABLES[source]
        ],
    )
    def ingest_source(
        context: dg.AssetExecutionContext,
        config: IngestConfig,
        warehouse: WarehouseResource,
        privacy: PrivacyResource,
        inbound: InboundResource,
    ):
        uris = config.uris or inbound.files(source)
        with warehouse.warehouse().connect() as conn:
            results = ingest_uris(conn, uris, privacy.protector(), source, config.fhir_mode)
        rows: Counter = Counter()
        reasons: Counter = Counter()
        for result in results:
            rows.update(result.rows_by_entity)
            reasons.update(result.quarantined_by_reason)
            skipped = " (already loaded)" if result.skipped else ""
            context.log.info(
                f"{source} file {result.file_id}: read {result.read}, loaded {result.loaded},"
                f" quarantined {result.quarantined}{skipped}"
            )
        totals = {
            "files": len(results),
            "files_skipped": sum(r.skipped for r in results),
            "records_read": sum(r.read for r in results),
            "records_loaded": sum(r.loaded for r in results),
            "records_quarantined": sum(r.quarantined for r in results),
            "quarantined_by_reason": dict(reasons),
        }
        for table in SOURCE_TABLES[source]:
            entity = table.removesuffix("s")
            yield dg.MaterializeResult(
                asset_key=landing_key(source, table),
                metadata={"rows_landed": rows.get(entity, 0), **totals},
            )

    return ingest_source


def _reconciliation_check(source: str) -> dg.AssetChecksDefinition:
    primary = landing_key(source, SOURCE_TABLES[source][0])

    @dg.asset_check(
        asset=primary,
        name=f"{source}_reconciliation",
        blocking=True,
        description="Every file: records read = loaded + quarantined.",
    )
    def reconciliation(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            files, unbalanced = conn.execute(
                "select count(*), count(*) filter (where records_read <>"
                " records_loaded + records_quarantined)"
                " from landing.source_files where source = %s",
                (source,),
            ).fetchone()
        return dg.AssetCheckResult(
            passed=unbalanced == 0,
            metadata={"files": files, "files_not_reconciling": unbalanced},
        )

    return reconciliation


ingest_assets = [_build_ingest_asset(source) for source in SOURCE_TABLES]
ingest_checks = [_reconciliation_check(source) for source in SOURCE_TABLES]
all_landing_keys = [landing_key(s, t) for s, tables in SOURCE_TABLES.items() for t in tables]

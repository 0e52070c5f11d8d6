"""The PHI canary scan as a blocking asset check on the audiences: a leak stops activation.

After dbt has built the marts, every table outside the vault is scanned for a sample of real
vaulted values (decrypted in memory, audited), for canary values planted in the sources
(HUB_PHI_CANARIES: a JSON file {"label": ["value", ...]}), and for email and SSN patterns.
The check is blocking on marts.audience_membership, so audience_syncs does not run after a
failure. Metadata names tables and kinds of finding with counts - never a value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from pipelines.resources import PrivacyResource, WarehouseResource
from services.phi_scan import warehouse_scan

AUDIENCES = dg.AssetKey(["marts", "audience_membership"])
VAULT_SAMPLE = 200
ROW_LIMIT = 200_000  # per table: bounds the check's time on very large landing tables


def planted_canaries() -> dict[str, list[str]]:
    """Canary values from the file HUB_PHI_CANARIES names (read when the check runs)."""
    path = os.environ.get("HUB_PHI_CANARIES")
    if not path:
        return {}
    data = json.loads(Path(path).read_text())
    return {str(label): [str(v) for v in values] for label, values in data.items()}


@dg.asset_check(
    asset=AUDIENCES,
    name="phi_canary_scan",
    blocking=True,
    description="No PHI outside the vault: sampled vaulted values, planted canaries and"
    " email/SSN patterns, in every table of every schema. Blocks activation on failure.",
)
def phi_canary_scan(warehouse: WarehouseResource, privacy: PrivacyResource) -> dg.AssetCheckResult:
    row_limit = int(os.environ.get("HUB_PHI_SCAN_ROW_LIMIT", ROW_LIMIT))
    with warehouse.warehouse().connect() as conn:
        report = warehouse_scan(
            conn,
            privacy.vault_cipher(),
            sample=VAULT_SAMPLE,
            extra_values=planted_canaries(),
            row_limit=row_limit,
        )
    return dg.AssetCheckResult(
        passed=report.clean,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "tables_scanned": len(report.scanned),
            "rows_scanned": sum(report.scanned.values()),
            "findings": sum(report.hits.values()),
            "where": sorted({f"{where}: {kind}" for where, kind in report.hits}),
        },
    )


privacy_checks = [phi_canary_scan]

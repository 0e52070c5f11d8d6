"""Protect stage: resolve the same person across sources, on tokens only.

Tokenization, vault encryption and generalization already happened in-stream during ingest
(PHI must never land in clear); this stage links the protected subjects into persons.
"""

import dagster as dg

from assets.ingest import all_landing_keys
from pipelines.resources import PrivacyResource, WarehouseResource
from services.identity import resolve_persons


@dg.asset(
    group_name="protect",
    deps=all_landing_keys,
    description="Source subjects resolved to persons through hashed identity keys.",
)
def person_xref(warehouse: WarehouseResource, privacy: PrivacyResource) -> dg.MaterializeResult:
    with warehouse.warehouse().connect() as conn:
        report = resolve_persons(conn, privacy.tokenizer(), privacy.policy())
    return dg.MaterializeResult(
        metadata={
            "subjects": report.subjects,
            "persons": report.persons,
            "links_by_key_type": report.links_by_key_type,
            "merges_applied": report.merges_applied,
        }
    )

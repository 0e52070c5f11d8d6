"""Review before first send: recorded approvals of marketing audiences, per destination.

A marketing audience may only be pushed to a destination once someone has reviewed it and
recorded an approval (`hub approve AUDIENCE --by ... --note ...`). The approval is bound to
a hash of the segment's definition: its purpose, its personalization fields, its model and
the checksum of the model's SQL in the dbt manifest. Changing any of them voids the
approval until it is renewed. Approvals and voids are written to the audit chain.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import orjson
import psycopg

from connectors.warehouse.audit import record_audit

# Purposes whose audiences need a recorded review before they are sent.
REVIEWED_PURPOSES = frozenset({"marketing"})
ANY_DESTINATION = "*"


@dataclass(frozen=True, slots=True)
class SegmentDefinition:
    """What an approval is bound to. model_checksum is None when no manifest is found."""

    audience: str
    segment_model: str | None
    purpose: str
    personalization_fields: tuple[str, ...]
    model_checksum: str | None

    def hash(self) -> str:
        canonical = {
            "segment_model": self.segment_model,
            "purpose": self.purpose,
            "personalization_fields": sorted(self.personalization_fields),
            "model_checksum": self.model_checksum,
        }
        return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class ApprovalStatus:
    required: bool
    approved: bool
    approval_id: int | None
    definition_hash: str
    voided: int = 0  # approvals voided by this check because the definition changed

    @property
    def may_send(self) -> bool:
        return self.approved or not self.required


@dataclass(frozen=True, slots=True)
class Approval:
    approval_id: int
    audience: str
    destination: str
    definition_hash: str
    approved_by: str
    note: str
    approved_at: datetime
    voided_at: datetime | None
    void_reason: str | None


def default_manifest_path() -> Path:
    """target/manifest.json of the dbt project (HUB_DBT_PROJECT_DIR, else the repo's)."""
    project = os.environ.get("HUB_DBT_PROJECT_DIR")
    root = Path(project) if project else Path(__file__).resolve().parents[1] / "dbt_project"
    return root / "target" / "manifest.json"


def current_definition(
    conn: psycopg.Connection, audience: str, manifest_path: Path | None = None
) -> SegmentDefinition:
    row = conn.execute(
        "select segment_model, purpose, personalization_fields from marts.segment_catalog"
        " where audience = %s",
        (audience,),
    ).fetchone()
    if row is None:
        raise LookupError(f"unknown audience {audience!r}: not in marts.segment_catalog")
    model, purpose, fields = row
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    path = manifest_path or default_manifest_path()
    checksum = _model_checksum(str(path), _mtime(path), model) if model else None
    return SegmentDefinition(audience, model, purpose, tuple(fields or ()), checksum)


def approve(
    conn: psycopg.Connection,
    audience: str,
    approved_by: str,
    note: str,
    destination: str = ANY_DESTINATION,
    manifest_path: Path | None = None,
) -> Approval:
    """Record an approval of the audience's current definition (audited); commits."""
    if not approved_by.strip() or not note.strip():
        raise ValueError("an approval needs a reviewer (--by) and a note (--note)")
    definition = current_definition(conn, audience, manifest_path)
    with conn.transaction():
        approval_id, approved_at = conn.execute(
            "insert into activation.approvals (audience, destination, definition_hash, purpose,"
            " personalization_fields, approved_by, note) values (%s, %s, %s, %s, %s, %s, %s)"
            " returning approval_id, approved_at",
            (
                audience,
                destination,
                definition.hash(),
                definition.purpose,
                list(definition.personalization_fields),
                approved_by.strip(),
                note.strip(),
            ),
        ).fetchone()
        record_audit(
            conn,
            "approve_audience",
            f"{destination}/{audience}@{definition.hash()[:12]}",
            1,
            purpose=definition.purpose,
            role="marketing_ops",
            actor=approved_by.strip(),
        )
    return Approval(
        approval_id,
        audience,
        destination,
        definition.hash(),
        approved_by.strip(),
        note.strip(),
        approved_at,
        None,
        None,
    )


def approval_status(
    conn: psycopg.Connection,
    audience: str,
    destination: str,
    manifest_path: Path | None = None,
    definition: SegmentDefinition | None = None,
) -> ApprovalStatus:
    """Whether the audience may be sent to `destination`; voids approvals of an older
    definition on the way (inside the caller's transaction, audited)."""
    definition = definition or current_definition(conn, audience, manifest_path)
    current = definition.hash()
    voided = conn.execute(
        "update activation.approvals set voided_at = now(), void_reason = 'definition_changed'"
        " where audience = %s and voided_at is null and definition_hash <> %s",
        (audience, current),
    ).rowcount
    if voided:
        record_audit(
            conn,
            "void_approval",
            f"{audience}: definition changed",
            voided,
            purpose=definition.purpose,
        )
    row = conn.execute(
        "select approval_id from activation.approvals where audience = %s"
        " and destination in (%s, %s) and voided_at is null and definition_hash = %s"
        " order by approved_at desc limit 1",
        (audience, destination, ANY_DESTINATION, current),
    ).fetchone()
    required = definition.purpose in REVIEWED_PURPOSES
    return ApprovalStatus(required, row is not None, row[0] if row else None, current, voided)


def list_approvals(conn: psycopg.Connection, audience: str | None = None) -> list[Approval]:
    rows = conn.execute(
        "select approval_id, audience, destination, definition_hash, approved_by, note,"
        " approved_at, voided_at, void_reason from activation.approvals"
        " where %s::text is null or audience = %s order by approval_id",
        (audience, audience),
    ).fetchall()
    return [Approval(*row) for row in rows]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


@lru_cache(maxsize=64)
def _model_checksum(path: str, mtime: float, model: str) -> str | None:
    """The manifest's checksum of a model's SQL (cached per manifest version)."""
    if mtime < 0:
        return None
    try:
        manifest = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") == "model" and node.get("name") == model:
            checksum = node.get("checksum") or {}
            return checksum.get("checksum")
    return None

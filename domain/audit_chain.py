"""The audit log's hash chain: each record's hash covers its content and the previous hash,
so editing, deleting or reordering any past record breaks every hash after it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: datetime
    actor: str
    role: str
    purpose: str
    action: str
    object: str
    row_count: int


def chain_hash(previous_hash: str, record: AuditRecord) -> str:
    content = "\x1f".join(
        (
            previous_hash,
            record.at.isoformat(),
            record.actor,
            record.role,
            record.purpose,
            record.action,
            record.object,
            str(record.row_count),
        )
    )
    return hashlib.sha256(content.encode()).hexdigest()

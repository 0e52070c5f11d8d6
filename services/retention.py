"""Retention: purge what has outlived its configured period, and audit the purge itself.

Periods come from domain/privacy_settings.yaml. Purged: engagement events (by occurrence),
quarantined raw payloads (set to null; the row with file, position and reason stays), the
sync changelog (acknowledged or rejected ledger rows, finished runs without ledger rows,
processed forget-queue rows). Never purged: pending ledger rows (crash recovery needs them),
suppressions (consent state), the audit log (append-only, kept at least six years).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from connectors.warehouse.audit import record_audit
from domain.privacy_settings import RetentionSettings


@dataclass
class PurgeStep:
    target: str
    cutoff: datetime
    rows: int


@dataclass
class RetentionReport:
    dry_run: bool
    steps: list[PurgeStep] = field(default_factory=list)
    oldest_audit_record: datetime | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "purged": {s.target: s.rows for s in self.steps},
            "cutoffs": {s.target: s.cutoff.isoformat() for s in self.steps},
            "oldest_audit_record": (
                self.oldest_audit_record.isoformat() if self.oldest_audit_record else None
            ),
        }


# target -> (count SQL, purge SQL), each taking the cutoff once.
_STEPS: dict[str, tuple[str, str, str]] = {
    "engagement.events": (
        "engagement_events_days",
        "select count(*) from engagement.events where occurred_at < %s",
        "delete from engagement.events where occurred_at < %s",
    ),
    "quarantine.records.payload": (
        "quarantine_payload_days",
        "select count(*) from quarantine.records where payload is not null and quarantined_at < %s",
        "update quarantine.records set payload = null, payload_key_version = null"
        " where payload is not null and quarantined_at < %s",
    ),
    "activation.ledger": (
        "sync_changelog_days",
        "select count(*) from activation.ledger where status <> 'pending' and created_at < %s",
        "delete from activation.ledger where status <> 'pending' and created_at < %s",
    ),
    "activation.sync_runs": (
        "sync_changelog_days",
        "select count(*) from activation.sync_runs r where r.status <> 'running'"
        " and coalesce(r.finished_at, r.started_at) < %s"
        " and not exists (select 1 from activation.ledger l where l.run_id = r.run_id)",
        "delete from activation.sync_runs r where r.status <> 'running'"
        " and coalesce(r.finished_at, r.started_at) < %s"
        " and not exists (select 1 from activation.ledger l where l.run_id = r.run_id)",
    ),
    "activation.forget_queue": (
        "sync_changelog_days",
        "select count(*) from activation.forget_queue where status <> 'pending'"
        " and processed_at < %s",
        "delete from activation.forget_queue where status <> 'pending' and processed_at < %s",
    ),
}


def purge(
    conn: psycopg.Connection,
    settings: RetentionSettings,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RetentionReport:
    """Apply every retention period, in one transaction, with one audit record per target."""
    now = now or datetime.now(UTC)
    report = RetentionReport(dry_run)
    with conn.transaction():
        for target, (setting, count_sql, purge_sql) in _STEPS.items():
            cutoff = now - timedelta(days=getattr(settings, setting))
            if dry_run:
                rows = conn.execute(count_sql, (cutoff,)).fetchone()[0]
            else:
                rows = conn.execute(purge_sql, (cutoff,)).rowcount
            report.steps.append(PurgeStep(target, cutoff, rows))
            record_audit(
                conn,
                "retention_dry_run" if dry_run else "retention_purge",
                f"{target} older than {cutoff.date().isoformat()}",
                rows,
                purpose="retention",
                role="hub_owner",
            )
        report.oldest_audit_record = conn.execute("select min(at) from audit.events").fetchone()[0]
    return report

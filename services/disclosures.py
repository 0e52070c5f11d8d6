"""Accounting of disclosures for one person (HIPAA 164.528): what went where, when, and why.

Built from the sync ledger (every add, update and remove pushed to an engine, with purpose
and the consent record that allowed it), the run it belonged to, the audit record of that
run, the personalization fields the audience carried, and removals owed after `hub forget`.
Tokens from before a key rotation are included, so history survives rotation. Producing an
accounting is itself audited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from connectors.warehouse.audit import record_audit
from domain.policy import FieldPolicy
from domain.tokens import Tokenizer
from services.person_lookup import find_person

CONTACT_FIELD = "email"


@dataclass
class Disclosure:
    at: datetime
    destination: str
    audience: str
    operation: str  # add | update | remove
    status: str  # pending | acked | rejected | superseded | queued
    purpose: str
    consent_ref: str | None
    fields: list[str]
    run_id: str | None
    acked_at: datetime | None = None
    audit_id: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "destination": self.destination,
            "audience": self.audience,
            "operation": self.operation,
            "status": self.status,
            "purpose": self.purpose,
            "consent_ref": self.consent_ref,
            "fields": self.fields,
            "run_id": self.run_id,
            "acked_at": self.acked_at.isoformat() if self.acked_at else None,
            "audit_id": self.audit_id,
        }


@dataclass
class DisclosureAccounting:
    matched_by: str
    persons: int
    disclosures: list[Disclosure] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "matched_by": self.matched_by,
            "persons": self.persons,
            "disclosures": [d.as_dict() for d in self.disclosures],
        }


def account_disclosures(
    conn: psycopg.Connection,
    tokenizer: Tokenizer,
    policy: FieldPolicy,
    identifier: str,
    authority: str | None = None,
) -> DisclosureAccounting:
    with conn.transaction():
        match = find_person(conn, tokenizer, policy, identifier, authority)
        accounting = DisclosureAccounting(match.matched_by, len(match.person_tokens))
        tokens = match.all_person_tokens
        if tokens:
            fields_of = _fields_by_audience(conn)
            rows = conn.execute(
                "select l.created_at, l.destination, l.audience, l.operation, l.status,"
                " l.purpose, l.consent_ref, l.run_id, l.acked_at,"
                " (select a.audit_id from audit.events a where a.action = 'sync'"
                "   and a.object = l.destination || '/' || l.audience and a.at >= r.started_at"
                "   order by a.audit_id limit 1)"
                " from activation.ledger l join activation.sync_runs r using (run_id)"
                " where l.person_token = any(%s) and not r.dry_run"
                " order by l.created_at, l.ledger_id",
                (tokens,),
            ).fetchall()
            for at, dest, audience, op, status, purpose, consent, run, acked, audit_id in rows:
                fields = [] if op == "remove" else fields_of.get(audience, [CONTACT_FIELD])
                accounting.disclosures.append(
                    Disclosure(
                        at,
                        dest,
                        audience,
                        op,
                        status,
                        purpose,
                        consent,
                        fields,
                        run,
                        acked,
                        audit_id,
                    )
                )
            for at, dest, audience, status, processed in conn.execute(
                "select requested_at, destination, audience, status, processed_at"
                " from activation.forget_queue where person_token = any(%s) order by queue_id",
                (tokens,),
            ):
                accounting.disclosures.append(
                    Disclosure(
                        at,
                        dest,
                        audience,
                        "remove",
                        "queued" if status == "pending" else status,
                        "privacy_request",
                        None,
                        [],
                        None,
                        processed,
                    )
                )
            accounting.disclosures.sort(key=lambda d: d.at)
        record_audit(
            conn,
            "disclosure_accounting",
            f"person by {match.matched_by}: {len(accounting.disclosures)} disclosures",
            len(accounting.disclosures),
            purpose="privacy_request",
            role="hub_owner",
        )
    return accounting


def _fields_by_audience(conn: psycopg.Connection) -> dict[str, list[str]]:
    """The contact fields each audience carries: the address plus its personalization."""
    if not conn.execute("select to_regclass('marts.segment_catalog') is not null").fetchone()[0]:
        return {}
    fields: dict[str, list[str]] = {}
    for audience, personalization in conn.execute(
        "select audience, personalization_fields from marts.segment_catalog"
    ):
        if isinstance(personalization, str):
            personalization = [f.strip() for f in personalization.split(",") if f.strip()]
        fields[audience] = [CONTACT_FIELD, *(personalization or [])]
    return fields

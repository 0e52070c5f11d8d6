"""Resolve source subjects to persons and store the mapping (landing.person_xref)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from connectors.warehouse.audit import record_audit
from connectors.warehouse.database import landing_table
from domain.identity import Resolution, resolve
from domain.policy import FieldPolicy
from domain.tokens import Tokenizer

KEYS_PER_FETCH = 50_000
# Every identity key in the order resolve(keys_sorted=True) needs (bench/ prices reading it).
IDENTITY_KEYS_IN_ORDER = (
    "select subject_token, key_type, key_hash from vault.identity_keys"
    " order by key_type, key_hash, subject_token"
)


@dataclass
class MatchReport:
    subjects: int
    persons: int
    links_by_key_type: dict[str, int]
    merges_applied: int

    def as_dict(self) -> dict[str, object]:
        return {
            "subjects": self.subjects,
            "persons": self.persons,
            "links_by_key_type": self.links_by_key_type,
            "merges_applied": self.merges_applied,
        }


def resolve_persons(
    conn: psycopg.Connection, tokenizer: Tokenizer, policy: FieldPolicy
) -> MatchReport:
    """Recompute person_xref from every landed subject, in one transaction."""
    with conn.transaction():
        subjects: set[str] = set()
        for entity in policy.entities:
            rows = conn.execute(f"select distinct subject_token from {landing_table(entity)}")
            subjects.update(token for (token,) in rows if token)
        merges = conn.execute(
            "select subject_token, prior_subject_token from landing.merges"
            " where prior_subject_token is not null"
        ).fetchall()
        # Streamed in key order (a server-side cursor), never held whole: see resolve().
        with conn.cursor("identity_keys") as keys:
            keys.itersize = KEYS_PER_FETCH
            keys.execute(IDENTITY_KEYS_IN_ORDER)
            resolution: Resolution = resolve(subjects, keys, merges, tokenizer, keys_sorted=True)
        conn.execute(
            "create temp table xref_new (like landing.person_xref including defaults)"
            " on commit drop"
        )
        with (
            conn.cursor() as cur,
            cur.copy("copy xref_new (subject_token, person_token) from stdin") as copy,
        ):
            for subject, person in resolution.person_of.items():
                copy.write_row((subject, person))
        conn.execute("delete from landing.person_xref")
        conn.execute(
            "insert into landing.person_xref (subject_token, person_token)"
            " select subject_token, person_token from xref_new"
        )
        record_audit(conn, "resolve_identities", "landing.person_xref", len(resolution.person_of))
    return MatchReport(
        subjects=len(resolution.person_of),
        persons=resolution.persons,
        links_by_key_type=dict(resolution.links_by_key_type),
        merges_applied=resolution.merges_applied,
    )

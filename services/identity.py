"""Resolve source subjects to persons and store the mapping (landing.person_xref)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

from connectors.warehouse.audit import record_audit
from connectors.warehouse.changes import writer_epoch
from connectors.warehouse.database import landing_table
from domain.identity import Resolution, resolve
from domain.policy import FieldPolicy
from domain.tokens import Tokenizer

KEYS_PER_FETCH = 50_000
# Every identity key in the order resolve(keys_sorted=True) needs (bench/ prices reading it):
# by key, read along the (key_type, key_hash) index. The subjects of one key need no order
# (a key links them all, whichever comes first); sorting them too cost 1.4 s at 1M patients.
IDENTITY_KEYS_IN_ORDER = (
    "select subject_token, key_type, key_hash from vault.identity_keys order by key_type, key_hash"
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
        # One query for the distinct subjects of every entity: PostgreSQL merges the
        # tables' subject indexes, and only the 2.6M distinct subjects of 1M patients cross
        # the wire, not each table's own (9.5M in all).
        subjects = _column(conn, _subjects_query(policy))
        merges = conn.execute(
            "select subject_token, prior_subject_token from landing.merges"
            " where prior_subject_token is not null"
        ).fetchall()
        # Streamed in key order (a server-side cursor), never held whole: see resolve().
        with conn.cursor("identity_keys") as keys:
            keys.execute(IDENTITY_KEYS_IN_ORDER)
            resolution: Resolution = resolve(
                subjects, _fetched(keys), merges, tokenizer, keys_sorted=True
            )
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
        _replace_changed_links(conn)
        record_audit(conn, "resolve_identities", "landing.person_xref", len(resolution.person_of))
    return MatchReport(
        subjects=len(resolution.person_of),
        persons=resolution.persons,
        links_by_key_type=dict(resolution.links_by_key_type),
        merges_applied=resolution.merges_applied,
    )


def _subjects_query(policy: FieldPolicy) -> str:
    return " union ".join(
        f"select subject_token from {landing_table(entity)} where subject_token <> ''"
        for entity in policy.entities
    )


def _fetched(cursor: psycopg.ServerCursor) -> Iterator[tuple]:
    """The cursor's rows, KEYS_PER_FETCH at a time, the next batch fetched while the caller
    works through this one: PostgreSQL computes a server-side cursor's rows only when asked,
    so fetching in turn left it idle while resolution ran and resolution idle while it read
    (fetchmany also builds each batch in C, where iterating the cursor costs a Python call
    per row: 3.7 us a key at 1M patients)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resolve-fetch") as fetcher:
        batch = fetcher.submit(cursor.fetchmany, KEYS_PER_FETCH)
        while rows := batch.result():
            batch = fetcher.submit(cursor.fetchmany, KEYS_PER_FETCH)
            yield from rows


def _column(conn: psycopg.Connection, query: str) -> Iterator[str]:
    with conn.cursor("resolve_column") as cursor:
        cursor.execute(query)
        for (value,) in _fetched(cursor):
            yield value


def _replace_changed_links(conn: psycopg.Connection) -> None:
    """Make person_xref equal xref_new, touching only the links that changed, and log the
    persons on both sides of each change (stamped with the change epoch), so a sync knows
    whose payload may now come from other vault rows (connectors/warehouse/changes.py).
    Log entries no sync will ask for again (older than every sync's watermark) go."""
    epoch = writer_epoch(conn)
    conn.execute("analyze xref_new")
    conn.execute(
        "delete from landing.person_changes where change_epoch <"
        " (select min(since_epoch) from activation.sync_watermarks)"
    )
    conn.execute(
        "insert into landing.person_changes (change_epoch, person_token)"
        " select distinct %s::bigint, p.person_token"
        " from landing.person_xref o full join xref_new n using (subject_token)"
        " cross join lateral (values (o.person_token), (n.person_token)) as p(person_token)"
        " where o.person_token is distinct from n.person_token"
        "  and p.person_token is not null",
        (epoch,),
    )
    conn.execute(
        "delete from landing.person_xref o where not exists (select 1 from xref_new n"
        " where n.subject_token = o.subject_token and n.person_token = o.person_token)"
    )
    conn.execute(
        "insert into landing.person_xref (subject_token, person_token)"
        " select n.subject_token, n.person_token from xref_new n where not exists"
        " (select 1 from landing.person_xref o where o.subject_token = n.subject_token)"
    )

"""A small synthetic population written straight into the warehouse tables the sync reads.

Persons are `p000042`-style tokens with one subject each; their email and given name are
AES-GCM encrypted into vault.contact_fields exactly as the protect stage writes them. Every
address is under example.org (RFC 2606), never a real mailbox.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import psycopg

from connectors.warehouse.changes import writer_epoch
from domain.vault_cipher import VaultCipher

AUTHORIZED_ON = dt.date(2025, 1, 1)


def person(i: int) -> str:
    return f"p{i:06d}"


def email_of(i: int) -> str:
    return f"person{i}@example.org"


def add_people(
    conn: psycopg.Connection,
    cipher: VaultCipher,
    people: Iterable[int],
    *,
    purposes: Iterable[str] = ("treatment", "marketing"),
    given_name: str | None = None,
) -> None:
    """Vault contacts, identity links and valid consent for each person (idempotent)."""
    rows = list(people)
    purposes = list(purposes)
    with conn.cursor() as cur:
        cur.execute("create temp table if not exists seed_xref (s text, p text)")
        cur.execute("truncate seed_xref")
        with cur.copy("copy seed_xref from stdin") as copy:
            for i in rows:
                copy.write_row((f"s-{person(i)}", person(i)))
        cur.execute(
            "insert into landing.person_xref (subject_token, person_token)"
            " select s, p from seed_xref on conflict do nothing"
        )
    for i in rows:
        set_contact(conn, cipher, i, "email", email_of(i))
        set_contact(conn, cipher, i, "given_name", given_name or f"Name{i}")
    with (
        conn.cursor() as cur,
        cur.copy(
            "copy intermediate.int_consent_events (person_token, purpose, event_type,"
            " effective_on, source_ref) from stdin"
        ) as copy,
    ):
        for i in rows:
            copy.write_row((person(i), None, "opt_in", AUTHORIZED_ON, f"crm-optin-{i}"))
            for purpose in purposes:
                copy.write_row((person(i), purpose, "permit", AUTHORIZED_ON, f"consent-{i}"))
    conn.commit()


def set_contact(
    conn: psycopg.Connection, cipher: VaultCipher, i: int, column: str, value: str
) -> None:
    """Write one vault field as the loader does: stamped with the writer's change epoch."""
    subject = f"s-{person(i)}"
    version, blob = cipher.encrypt(subject, column, value)
    conn.execute(
        "insert into vault.contact_fields (subject_token, column_name, key_version, ciphertext,"
        " effective_at, change_epoch) values (%s, %s, %s, %s, now(), %s)",  # sets it (view)
        (subject, column, version, blob, writer_epoch(conn)),
    )


def define_audience(
    conn: psycopg.Connection,
    audience: str,
    purpose: str,
    members: Iterable[int],
    fields: Iterable[str] = ("given_name",),
    segment_model: str | None = None,
) -> None:
    """(Re)define an audience and replace its membership."""
    conn.execute(
        "insert into marts.segment_catalog (audience, segment_model, purpose,"
        " personalization_fields) values (%s, %s, %s, %s) on conflict (audience) do update"
        " set segment_model = excluded.segment_model, purpose = excluded.purpose,"
        " personalization_fields = excluded.personalization_fields",
        (audience, segment_model or f"seg_{audience}", purpose, list(fields)),
    )
    conn.execute("delete from marts.audience_membership where audience = %s", (audience,))
    with (
        conn.cursor() as cur,
        cur.copy(
            "copy marts.audience_membership (audience, person_token, purpose) from stdin"
        ) as copy,
    ):
        for i in members:
            copy.write_row((audience, person(i), purpose))
    conn.commit()


def revoke(conn: psycopg.Connection, i: int, purpose: str, on: dt.date) -> None:
    """A deny of the purpose, as the dbt consent model derives it from a FHIR/CRM revocation."""
    conn.execute(
        "insert into intermediate.int_consent_events (person_token, purpose, event_type,"
        " effective_on, source_ref) values (%s, %s, 'deny', %s, %s)",
        (person(i), purpose, on, f"revoke-{i}"),
    )
    conn.commit()


def unsubscribe(conn: psycopg.Connection, i: int, at: dt.datetime) -> None:
    """An unsubscribe read back from the engine: the live suppression path, no dbt needed."""
    conn.execute(
        "insert into engagement.suppressions (event_id, destination, person_token, event_type,"
        " effective_at) values (%s, 'sandbox', %s, 'unsubscribe', %s)",
        (f"evt-unsub-{i}-{at.timestamp()}", person(i), at),
    )
    conn.commit()

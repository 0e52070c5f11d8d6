"""Forget a person: crypto-shred their vault rows, take them out of every audience, and queue
a removal at every engine that holds them. Audited; counts only, never values or tokens.

What happens, in one transaction:
- the person is found through hashed identity keys (services/person_lookup.py);
- their vault rows (the only place their contact data exists, encrypted) and identity keys
  are deleted; quarantined raw payloads holding their own values (found by decrypting each
  payload in memory and matching exactly) lose their payload too;
- every activation.sync_state row for them becomes a pending activation.forget_queue row and
  is deleted, and their marts.audience_membership rows are deleted at once;
- one audit record (action `forget`) is appended.
`drain_forget_queue` pushes the queued removals to an engine (`hub forget drain`); a sync
should call it before diffing. With no vault row left the person can never be pushed again:
the send step finds no address (excluded as `no_email`). Their landing rows stay: tokens and
generalized values only, no direct identifiers. VACUUM (`vacuum=True`) also reclaims the
deleted ciphertext from the table files; backups age out on their own schedule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import psycopg

from connectors.email.base import EmailEngine
from connectors.warehouse.audit import record_audit
from connectors.warehouse.changes import writer_epoch
from domain.dlp import DlpScanner
from domain.normalize import normalize_phone
from domain.policy import FieldPolicy
from domain.tokens import Tokenizer
from domain.vault_cipher import VaultCipher, VaultDecryptionError
from services.person_lookup import PersonMatch, find_person

# Vault columns distinctive enough to recognise the person inside a raw quarantined record.
DISTINCTIVE_COLUMNS = ("email", "phone", "address_line")
REMOVE_BATCH = 500


@dataclass
class ForgetReport:
    matched_by: str
    persons: int = 0
    subjects: int = 0
    vault_rows_shredded: int = 0
    identity_keys_removed: int = 0
    quarantine_payloads_shredded: int = 0
    audience_rows_removed: int = 0
    removals_queued: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class DrainReport:
    destination: str
    removed: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def forget_person(
    conn: psycopg.Connection,
    tokenizer: Tokenizer,
    cipher: VaultCipher,
    policy: FieldPolicy,
    identifier: str,
    authority: str | None = None,
    dry_run: bool = False,
    vacuum: bool = False,
) -> ForgetReport:
    with conn.transaction():
        match = find_person(conn, tokenizer, policy, identifier, authority)
        report = ForgetReport(match.matched_by, dry_run=dry_run)
        if not match.found:
            return report
        report.persons = len(match.person_tokens)
        report.subjects = len(match.subject_tokens)
        subjects = sorted(match.subject_tokens)
        persons = match.all_person_tokens
        report.quarantine_payloads_shredded = _shred_quarantine(
            conn, cipher, match, identifier, dry_run
        )
        # Counted as the view's rows (one per field value, as the vault had them before);
        # the subjects' rows of vault.contacts go whole.
        report.vault_rows_shredded = _delete(
            conn, "vault.contact_fields", "subject_token", subjects, dry_run=True
        )
        _delete(conn, "vault.contacts", "subject_token", subjects, dry_run)
        report.identity_keys_removed = _delete(
            conn, "vault.identity_keys", "subject_token", subjects, dry_run
        )
        if not dry_run:  # their payload inputs are gone: every sync re-checks them
            conn.execute(
                "insert into landing.person_changes (change_epoch, person_token)"
                " select %s, p from unnest(%s::text[]) as p",
                (writer_epoch(conn), sorted(persons)),
            )
        report.removals_queued = _queue_removals(conn, persons, dry_run)
        if _table_exists(conn, "marts.audience_membership"):
            report.audience_rows_removed = _delete(
                conn, "marts.audience_membership", "person_token", persons, dry_run
            )
        record_audit(
            conn,
            "forget_dry_run" if dry_run else "forget",
            f"person by {match.matched_by}: {report.subjects} subjects,"
            f" {report.vault_rows_shredded} vault rows, {report.removals_queued} engine removals",
            report.persons,
            purpose="privacy_request",
            role="hub_owner",
        )
    if vacuum and not dry_run:
        _vacuum(conn)
    return report


def _delete(
    conn: psycopg.Connection, table: str, column: str, values: list[str], dry_run: bool
) -> int:
    verb = "select count(*) from" if dry_run else "delete from"
    cursor = conn.execute(f"{verb} {table} where {column} = any(%s)", (values,))
    return cursor.fetchone()[0] if dry_run else cursor.rowcount


def _queue_removals(conn: psycopg.Connection, persons: list[str], dry_run: bool) -> int:
    if dry_run:
        return conn.execute(
            "select count(*) from activation.sync_state where person_token = any(%s)", (persons,)
        ).fetchone()[0]
    queued = conn.execute(
        "insert into activation.forget_queue (destination, audience, person_token)"
        " select destination, audience, person_token from activation.sync_state"
        " where person_token = any(%s)",
        (persons,),
    ).rowcount
    conn.execute("delete from activation.sync_state where person_token = any(%s)", (persons,))
    return queued


def _shred_quarantine(
    conn: psycopg.Connection,
    cipher: VaultCipher,
    match: PersonMatch,
    identifier: str,
    dry_run: bool,
) -> int:
    """Null the raw payloads of quarantined records that carry this person's own values."""
    values = {identifier.strip()} if match.matched_by != "token" else set()
    rows = conn.execute(
        "select subject_token, column_name, key_version, ciphertext from vault.contact_fields"
        " where subject_token = any(%s) and column_name = any(%s)",
        (sorted(match.subject_tokens), list(DISTINCTIVE_COLUMNS)),
    ).fetchall()
    for subject, column, version, blob in rows:
        value = cipher.decrypt(subject, column, version, blob)
        values.add(value)
        if column == "phone" and (e164 := normalize_phone(value)):
            digits = e164[-10:]
            values.update({f"{digits[:3]}-{digits[3:6]}-{digits[6:]}", digits})
    scanner = DlpScanner(kinds=(), exact=values)
    hits = []
    for quarantine_id, file_id, position, version, blob in conn.execute(
        "select quarantine_id, file_id, position, payload_key_version, payload"
        " from quarantine.records where payload is not null"
    ).fetchall():
        try:
            raw = cipher.decrypt_bytes(f"quarantine:{file_id}", position, version, blob)
        except VaultDecryptionError:
            continue  # under a retired key: nobody can read it anyway
        if not scanner.is_clean(raw.decode("utf-8", errors="replace")):
            hits.append(quarantine_id)
    if hits and not dry_run:
        conn.execute(
            "update quarantine.records set payload = null, payload_key_version = null"
            " where quarantine_id = any(%s)",
            (hits,),
        )
    return len(hits)


def drain_forget_queue(
    conn: psycopg.Connection, engine: EmailEngine, destination: str
) -> DrainReport:
    """Push the pending removals for one destination to its engine; mark each row done."""
    report = DrainReport(destination)
    pending = conn.execute(
        "select queue_id, audience, person_token from activation.forget_queue"
        " where destination = %s and status = 'pending' order by queue_id",
        (destination,),
    ).fetchall()
    conn.commit()
    by_audience: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for queue_id, audience, person in pending:
        by_audience[audience].append((queue_id, person))
    for audience, rows in by_audience.items():
        for start in range(0, len(rows), REMOVE_BATCH):
            batch = rows[start : start + REMOVE_BATCH]
            key = f"forget:{destination}:{audience}:{batch[0][0]}-{batch[-1][0]}"
            results = engine.remove(audience, [p for _, p in batch], idempotency_key=key)
            status = {r.external_id: (r.status, r.error_code) for r in results}
            with conn.transaction():
                for queue_id, person in batch:
                    outcome, code = status.get(person, ("rejected", "ENGINE_BAD_RESPONSE"))
                    done = outcome == "ok"
                    report.removed += done
                    report.failed += not done
                    conn.execute(
                        "update activation.forget_queue set status = %s, error_code = %s,"
                        " processed_at = now() where queue_id = %s",
                        ("removed" if done else "failed", None if done else code, queue_id),
                    )
    with conn.transaction():
        record_audit(
            conn,
            "forget_engine_removal",
            f"{destination}: {report.removed} removed, {report.failed} failed",
            report.removed,
            purpose="privacy_request",
            role="hub_sender",
        )
    return report


def _table_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (name,)).fetchone()[0]


def _vacuum(conn: psycopg.Connection) -> None:
    autocommit = conn.autocommit
    conn.commit()
    conn.autocommit = True
    try:
        for table in ("vault.contacts", "vault.identity_keys", "quarantine.records"):
            conn.execute(f"vacuum {table}")
    finally:
        conn.autocommit = autocommit

"""Load one source file into the warehouse: protected rows by COPY, in one transaction.

A file is loaded whole or not at all: its manifest row, landing rows, vault rows, identity
keys and quarantine rows commit together, so a crash leaves no half-loaded file and the
re-run starts it again. A file already in the manifest (same source and SHA-256) is skipped.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import smart_open

from connectors.warehouse.database import landing_table
from domain.protect import Protector
from domain.records import Rejection, SourceRecord

BATCH_ROWS = 10_000

# An input unit is one record as the source counts it: a FHIR resource or CRM row gives one
# SourceRecord; an HL7 message gives several (patient, observations, ...) or one Rejection.
InputUnit = SourceRecord | list[SourceRecord] | Rejection


@dataclass
class FileLoadResult:
    uri: str
    source: str
    file_id: int | None = None
    read: int = 0
    loaded: int = 0
    quarantined: int = 0
    skipped: bool = False
    rows_by_entity: Counter = field(default_factory=Counter)
    quarantined_by_reason: Counter = field(default_factory=Counter)

    @property
    def reconciled(self) -> bool:
        return self.read == self.loaded + self.quarantined

    def as_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "source": self.source,
            "read": self.read,
            "loaded": self.loaded,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "quarantined_by_reason": dict(self.quarantined_by_reason),
            "rows_by_entity": dict(self.rows_by_entity),
        }


def redact_uri(uri: str) -> str:
    """Drop credentials (user:password@) from a URI before it is stored or shown."""
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return uri


def file_fingerprint(uri: str) -> tuple[int, str]:
    """(size in bytes, SHA-256) of the file's raw bytes, read as a stream."""
    digest = hashlib.sha256()
    size = 0
    with smart_open.open(uri, "rb", compression="disable") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class _Batches:
    """Per-table row buffers flushed with COPY as they fill."""

    def __init__(self, conn: psycopg.Connection, protector: Protector) -> None:
        self.conn = conn
        self.protector = protector
        self.rows: dict[str, list[tuple]] = defaultdict(list)
        self.columns: dict[str, list[str]] = {}
        self.entities: set[str] = set()  # entities with an incoming_<entity> staging table
        conn.execute(
            "create temp table if not exists vault_incoming (like vault.contact_fields"
            " including defaults) on commit drop"
        )
        conn.execute(
            "create temp table if not exists identity_incoming (like vault.identity_keys)"
            " on commit drop"
        )

    def add(self, table: str, columns: list[str], row: tuple) -> None:
        self.columns[table] = columns
        buffer = self.rows[table]
        buffer.append(row)
        if len(buffer) >= BATCH_ROWS:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        for name in [table] if table else list(self.rows):
            rows = self.rows[name]
            if not rows:
                continue
            columns = ", ".join(self.columns[name])
            with (
                self.conn.cursor() as cur,
                cur.copy(f"copy {name} ({columns}) from stdin") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            rows.clear()


def load_file(
    conn: psycopg.Connection,
    *,
    uri: str,
    source: str,
    units: Iterable[InputUnit],
    protector: Protector,
    fingerprint: tuple[int, str] | None = None,
) -> FileLoadResult:
    """Protect and load every unit of one file; commit once at the end.

    fingerprint: (size, sha256) when the caller already knows it (e.g. a quarantine replay,
    whose "file" is one decrypted record); otherwise the URI is read to compute it.
    """
    shown_uri = redact_uri(uri)
    result = FileLoadResult(uri=shown_uri, source=source)
    size, sha256 = fingerprint or file_fingerprint(uri)
    with conn.transaction():
        existing = conn.execute(
            "select file_id, records_read, records_loaded, records_quarantined"
            " from landing.source_files where source = %s and sha256 = %s",
            (source, sha256),
        ).fetchone()
        if existing:
            result.file_id, result.read, result.loaded, result.quarantined = existing
            result.skipped = True
            result.quarantined_by_reason.update(
                dict(
                    conn.execute(
                        "select reason, count(*) from quarantine.records where file_id = %s"
                        " group by reason",
                        (result.file_id,),
                    ).fetchall()
                )
            )
            return result
        file_id = conn.execute(
            "insert into landing.source_files (uri, source, size_bytes, sha256)"
            " values (%s, %s, %s, %s) returning file_id",
            (shown_uri, source, size, sha256),
        ).fetchone()[0]
        result.file_id = file_id
        batches = _Batches(conn, protector)
        for unit in units:
            result.read += 1
            if isinstance(unit, Rejection):
                _quarantine(batches, protector, file_id, source, unit)
                result.quarantined += 1
                result.quarantined_by_reason[unit.reason] += 1
                continue
            for record in unit if isinstance(unit, list) else (unit,):
                _land(batches, protector, file_id, source, record)
                result.rows_by_entity[record.entity] += 1
            result.loaded += 1
        batches.flush()
        for entity in sorted(batches.entities):
            _merge_landing(conn, entity, protector)
        _merge_vault(conn)
        conn.execute(
            "update landing.source_files set records_read = %s, records_loaded = %s,"
            " records_quarantined = %s where file_id = %s",
            (result.read, result.loaded, result.quarantined, file_id),
        )
    return result


def _incoming(entity: str) -> str:
    return f"incoming_{entity}"


def _land(
    batches: _Batches, protector: Protector, file_id: int, source: str, record: SourceRecord
) -> None:
    protected = protector.protect(record)
    columns = protector.columns(record.entity)
    landing = protected.landing
    if record.entity not in batches.entities:
        batches.conn.execute(
            f"create temp table if not exists {_incoming(record.entity)}"
            f" (like {landing_table(record.entity)} including defaults) on commit drop"
        )
        batches.entities.add(record.entity)
    batches.add(
        _incoming(record.entity),
        ["file_id", "source", "position", *columns],
        (file_id, source, record.position, *[landing.get(c) for c in columns]),
    )
    effective_at = record.fields.get("effective_at")
    for column_name, key_version, blob in protected.vault:
        batches.add(
            "vault_incoming",
            ["subject_token", "column_name", "key_version", "ciphertext", "effective_at"],
            (protected.subject_token, column_name, key_version, blob, effective_at),
        )
    for key_type, key_hash in protected.identity_keys:
        batches.add(
            "identity_incoming",
            ["subject_token", "key_type", "key_hash"],
            (protected.subject_token, key_type, key_hash),
        )


def _quarantine(
    batches: _Batches, protector: Protector, file_id: int, source: str, rejection: Rejection
) -> None:
    key_version, blob = protector.cipher.encrypt(
        f"quarantine:{file_id}", rejection.position, rejection.payload
    )
    batches.add(
        "quarantine.records",
        [
            "file_id",
            "source",
            "position",
            "entity",
            "reason",
            "message",
            "payload_key_version",
            "payload",
        ],
        (
            file_id,
            source,
            rejection.position,
            rejection.entity,
            rejection.reason,
            rejection.message,
            key_version,
            blob,
        ),
    )


def _merge_landing(conn: psycopg.Connection, entity: str, protector: Protector) -> None:
    """Move a file's staged rows into landing: one row per natural key, newest version wins.

    "Newest" is the source's effective time, not arrival order, so a re-delivered old file
    cannot overwrite a later update; rows without a natural key are appended.
    """
    table, incoming = landing_table(entity), _incoming(entity)
    columns = ["file_id", "source", "position", *protector.columns(entity)]
    listed = ", ".join(columns)
    key = ["source", *protector.policy.entities[entity].natural_key]
    if len(key) == 1:
        conn.execute(f"insert into {table} ({listed}) select {listed} from {incoming}")
        return
    keyed = " and ".join(f"{k} is not null" for k in key)
    key_list = ", ".join(key)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    conn.execute(
        f"insert into {table} ({listed})"
        f" select distinct on ({key_list}) {listed} from {incoming} where {keyed}"
        f" order by {key_list}, effective_at desc nulls last, row_id desc"
        f" on conflict ({key_list}) do update set {updates}, loaded_at = now()"
        f" where {table}.effective_at is null or excluded.effective_at >= {table}.effective_at"
    )
    conn.execute(
        f"insert into {table} ({listed}) select {listed} from {incoming} where not ({keyed})"
    )


def _merge_vault(conn: psycopg.Connection) -> None:
    # The newest source value wins (by the source's effective time, not arrival order).
    conn.execute(
        "insert into vault.contact_fields"
        " (subject_token, column_name, key_version, ciphertext, effective_at)"
        " select distinct on (subject_token, column_name)"
        "   subject_token, column_name, key_version, ciphertext, effective_at"
        " from vault_incoming"
        " order by subject_token, column_name, effective_at desc nulls last"
        " on conflict (subject_token, column_name) do update set"
        "   key_version = excluded.key_version, ciphertext = excluded.ciphertext,"
        "   effective_at = excluded.effective_at, updated_at = now()"
        " where vault.contact_fields.effective_at is null"
        "   or excluded.effective_at >= vault.contact_fields.effective_at"
    )
    conn.execute(
        "insert into vault.identity_keys select * from identity_incoming on conflict do nothing"
    )

"""Scan the warehouse (every table outside the vault), logs and files for PHI.

The scanner (domain/dlp.py) looks for identifier patterns and for exact known values: canary
values planted in test data, or a sample of real vaulted values decrypted in memory. Reports
say where and what kind, with counts - never the value found.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from connectors.warehouse.audit import record_audit
from domain.dlp import DlpScanner
from domain.vault_cipher import VaultCipher

SKIPPED_SCHEMAS = ("vault", "pg_catalog", "information_schema", "pg_toast")
TEXT_SUFFIXES = {".json", ".log", ".txt", ".sql", ".csv", ".yml", ".yaml", ".md", ".html"}
# Vault columns whose values identify a person on their own (first names alone do not).
SAMPLED_COLUMNS = ("email", "phone", "address_line")


@dataclass
class PhiScanReport:
    scanned: Counter = field(default_factory=Counter)  # where -> rows/lines/files scanned
    hits: Counter = field(default_factory=Counter)  # (where, kind) -> count

    @property
    def clean(self) -> bool:
        return not self.hits

    def merge(self, other: PhiScanReport) -> PhiScanReport:
        self.scanned.update(other.scanned)
        self.hits.update(other.hits)
        return self

    def as_dict(self) -> dict[str, object]:
        return {
            "clean": self.clean,
            "places_scanned": len(self.scanned),
            "hits": [
                {"where": where, "kind": kind, "count": count}
                for (where, kind), count in sorted(self.hits.items())
            ],
        }


def warehouse_tables(
    conn: psycopg.Connection, schemas: Iterable[str] | None = None
) -> list[tuple[str, str]]:
    """Tables and materialized views outside the vault (all schemas unless given)."""
    rows = conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind in ('r', 'p', 'm') and n.nspname <> all(%s)"
        " and n.nspname not like 'pg\\_%%' order by 1, 2",
        (list(SKIPPED_SCHEMAS),),
    ).fetchall()
    wanted = set(schemas) if schemas is not None else None
    return [(s, t) for s, t in rows if wanted is None or s in wanted]


def scan_tables(
    conn: psycopg.Connection,
    scanner: DlpScanner,
    tables: Iterable[tuple[str, str]] | None = None,
    row_limit: int | None = None,
) -> PhiScanReport:
    """Every row of every table (as its text form), streamed by COPY."""
    report = PhiScanReport()
    for schema, table in tables if tables is not None else warehouse_tables(conn):
        where = f"{schema}.{table}"
        # Binary columns hold ciphertext (quarantine payloads): random bytes, not text.
        columns = [
            name
            for (name,) in conn.execute(
                "select a.attname from pg_attribute a where a.attrelid = %s::regclass"
                " and a.attnum > 0 and not a.attisdropped and a.atttypid <> 'bytea'::regtype"
                " order by a.attnum",
                (sql.Identifier(schema, table).as_string(conn),),
            )
        ]
        if not columns:
            continue
        query = sql.SQL("copy (select row({})::text from {}{}) to stdout").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.Identifier(schema, table),
            sql.SQL(f" limit {int(row_limit)}") if row_limit else sql.SQL(""),
        )
        with conn.cursor() as cur, cur.copy(query) as copy:
            for (text,) in copy.rows():
                report.scanned[where] += 1
                for finding in scanner.scan(text):
                    report.hits[(where, finding.kind)] += 1
    return report


def scan_texts(texts: Mapping[str, str], scanner: DlpScanner) -> PhiScanReport:
    report = PhiScanReport()
    for where, text in texts.items():
        report.scanned[where] += 1
        for finding in scanner.scan(text):
            report.hits[(where, finding.kind)] += 1
    return report


def scan_files(
    roots: Iterable[Path], scanner: DlpScanner, modified_since: float | None = None
) -> PhiScanReport:
    """Text files under the given folders (dbt target/ and logs/, for instance); with
    modified_since (a POSIX time), only files written since then."""
    report = PhiScanReport()
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            if path.suffix.lower() not in TEXT_SUFFIXES:
                continue
            if modified_since is not None and path.stat().st_mtime < modified_since:
                continue
            where = str(path)
            report.scanned[where] += 1
            text = path.read_text(errors="replace")
            for finding in scanner.scan(text):
                report.hits[(where, finding.kind)] += 1
    return report


def sample_vault_values(
    conn: psycopg.Connection, cipher: VaultCipher, sample: int = 200, purpose: str = "privacy_check"
) -> dict[str, set[str]]:
    """Decrypt (in memory) the identifying vault values of up to `sample` random subjects."""
    with conn.transaction():
        rows = conn.execute(
            "select v.subject_token, v.column_name, v.key_version, v.ciphertext"
            " from vault.contact_fields v where v.subject_token in ("
            "   select subject_token from vault.contact_fields where column_name = any(%s)"
            "   group by subject_token order by random() limit %s)"
            " and v.column_name = any(%s)",
            (list(SAMPLED_COLUMNS), sample, [*SAMPLED_COLUMNS, "given_name", "family_name"]),
        ).fetchall()
        record_audit(
            conn,
            "vault_decrypt",
            "vault.contact_fields sample for PHI scan",
            len({row[0] for row in rows}),
            purpose=purpose,
            role="hub_owner",
        )
    per_subject: dict[str, dict[str, str]] = {}
    for subject, column, version, blob in rows:
        per_subject.setdefault(subject, {})[column] = cipher.decrypt(subject, column, version, blob)
    values: dict[str, set[str]] = {column: set() for column in (*SAMPLED_COLUMNS, "full_name")}
    for fields in per_subject.values():
        for column in SAMPLED_COLUMNS:
            if fields.get(column):
                values[column].add(fields[column])
        if fields.get("given_name") and fields.get("family_name"):
            values["full_name"].add(f"{fields['given_name']} {fields['family_name']}")
    return values


# Pattern kinds that must never match outside the vault. Dates, URLs and long numbers are
# legitimate in the operational tier (clinical dates, source file URIs, counts).
CHECK_PATTERN_KINDS = ("email", "ssn")


def warehouse_scan(
    conn: psycopg.Connection,
    cipher: VaultCipher,
    sample: int = 200,
    extra_values: Mapping[str, Iterable[str]] | None = None,
    tables: Iterable[tuple[str, str]] | None = None,
    row_limit: int | None = None,
) -> PhiScanReport:
    """Every table outside the vault, for sampled vaulted values, extra (canary) values and
    email/SSN patterns."""
    values: dict[str, set[str]] = sample_vault_values(conn, cipher, sample)
    for label, more in (extra_values or {}).items():
        values.setdefault(label, set()).update(more)
    scanner = DlpScanner(kinds=CHECK_PATTERN_KINDS, exact=values)
    return scan_tables(conn, scanner, tables, row_limit)

"""Key rotation: vault keys re-encrypt online in batches; token keys re-key every stored token.

Vault key rotation (online): a new version becomes current at once (new writes use it), old
versions stay decryptable, every vault row and quarantine payload is re-encrypted in batches
of one transaction each, then `retire_vault_keys` destroys the old wrapped keys once no row
needs them. Readers never stop: a cipher that meets a version it does not know reloads.

Token key rotation (maintenance window: pause ingestion and syncs). Tokens chain
(domain/token_chain.py), so every stored token re-keys without plaintext:
1. a pending token key version is added to the keyring;
2. one transaction re-keys the core - every token in landing.*, vault.identity_keys and
   vault.contacts (re-encrypted, since the AAD names the subject token) - records each
   old -> new pair in vault.token_rekey, re-resolves persons with the new key and records
   old person -> new person; readers see all old or all new;
3. the pending version is promoted to current (new ingests produce the new tokens);
4. every other table holding tokens (dbt relations, engagement, journeys) is re-keyed from
   the mapping, one transaction per table.
Records of what was disclosed to an engine (activation.*, journeys.sends) keep the id that was
actually sent: rewriting them would falsify the accounting of disclosures, and the engine
still knows people by those ids. The next mirror sync removes the old ids and adds the new
ones; late engine feedback carrying an old id is translated on insert (trigger in schema.sql).
A crash is resumable: re-running picks up the pending version and the recorded progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from connectors.warehouse.audit import record_audit
from connectors.warehouse.vault_table import (
    fields_among,
    key_version_column,
    table_columns,
    table_fields,
)
from domain.keys import KeyringFileProvider
from domain.policy import FieldPolicy
from domain.token_chain import SQL_TOKEN_PATTERN, ChainedTokenizer
from domain.vault_cipher import VaultCipher
from services.identity import resolve_persons

BATCH_ROWS = 2000
ROTATION_LOCK = 7262004
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
# Never rewritten: the append-only audit log, and records of what went to an engine.
UNTOUCHED_SCHEMAS = ("audit", "activation")
DISCLOSURE_TABLES = {("journeys", "sends")}
MAPPING_TABLES = {("vault", "token_rekey"), ("vault", "key_rotations")}
CHUNK_ROWS = 10_000


class RotationError(Exception):
    """A rotation step cannot proceed; the message says what to do."""


@dataclass
class VaultRotationReport:
    rotation_id: int
    from_version: int
    to_version: int
    rows_reencrypted: int = 0
    quarantine_payloads_reencrypted: int = 0
    batches: int = 0
    retired_versions: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class TokenRotationReport:
    rotation_id: int
    from_version: int
    to_version: int
    tokens_mapped: int = 0
    persons_mapped: int = 0
    vault_rows_reencrypted: int = 0
    rows_rekeyed_by_table: dict[str, int] = field(default_factory=dict)
    resumed: bool = False

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


# -- vault keys -------------------------------------------------------------------------------


def rotate_vault_key(
    conn: psycopg.Connection,
    provider: KeyringFileProvider,
    batch_rows: int = BATCH_ROWS,
    retire_old: bool = False,
) -> VaultRotationReport:
    """New vault key version, current at once; re-encrypt every row under it, in batches."""
    _lock(conn)
    try:
        before = provider.versions("vault").current
        version = provider.add_version("vault")
        rotation_id = _start(conn, "vault", before, version)
        report = VaultRotationReport(rotation_id, before, version)
        cipher = provider.vault_cipher()
        report.rows_reencrypted, batches = reencrypt_vault(conn, cipher, batch_rows)
        report.quarantine_payloads_reencrypted, more = reencrypt_quarantine(
            conn, cipher, batch_rows
        )
        report.batches = batches + more
        total = report.rows_reencrypted + report.quarantine_payloads_reencrypted
        with conn.transaction():
            _finish(conn, rotation_id, total)
            record_audit(conn, "key_rotate", f"vault key v{before} -> v{version}", total, **_OWNER)
        if retire_old:
            report.retired_versions = retire_vault_keys(conn, provider)
        return report
    finally:
        _unlock(conn)


def reencrypt_vault(
    conn: psycopg.Connection, cipher: VaultCipher, batch_rows: int = BATCH_ROWS
) -> tuple[int, int]:
    """Re-encrypt the vault's field values not under the current version: (values, batches).

    Walks vault.contacts' primary key in batches of rows, one transaction each, then repeats
    for rows an older writer added meanwhile, until none is left.
    """
    current = cipher.current_version
    pairs = [(f, key_version_column(f)) for f in table_fields(conn)]  # (value, version) columns
    if not pairs:
        return 0, 0
    stale = " or ".join(f"{v} <> %(current)s" for _, v in pairs)
    listed = ", ".join(f"{f}, {v}" for f, v in pairs)
    sets = ", ".join(f"{f} = n.{f}, {v} = n.{v}" for f, v in pairs)
    arrays = ", ".join(f"%({f})s::bytea[], %({v})s::integer[]" for f, v in pairs)
    values_done = batches = 0
    while True:
        after = ""
        passed = 0
        while True:
            with conn.transaction():
                rows = conn.execute(
                    f"select subject_token, {listed} from vault.contacts"
                    f" where subject_token > %(after)s and ({stale})"
                    " order by subject_token limit %(limit)s for update skip locked",
                    {"after": after, "current": current, "limit": batch_rows},
                ).fetchall()
                if not rows:
                    break
                columns: dict[str, list] = {"subjects": [r[0] for r in rows]}
                for i, (f, v) in enumerate(pairs):
                    blobs, kept = [], []
                    for row in rows:
                        subject, blob, version = row[0], row[1 + 2 * i], row[2 + 2 * i]
                        if blob is not None and version != current:
                            plain = cipher.decrypt_bytes(subject, f, version, blob)
                            version, blob = cipher.encrypt(subject, f, plain)
                            passed += 1
                        blobs.append(blob)
                        kept.append(version)
                    columns[f], columns[v] = blobs, kept
                conn.execute(
                    f"update vault.contacts c set {sets}"
                    f" from unnest(%(subjects)s::text[], {arrays})"
                    f" as n(subject_token, {listed}) where c.subject_token = n.subject_token",
                    columns,
                )
            after = rows[-1][0]
            batches += 1
        values_done += passed
        if passed == 0:
            return values_done, batches


def reencrypt_quarantine(
    conn: psycopg.Connection, cipher: VaultCipher, batch_rows: int = BATCH_ROWS
) -> tuple[int, int]:
    """Re-encrypt quarantined raw payloads not under the current version: (payloads, batches)."""
    current = cipher.current_version
    done = batches = 0
    while True:
        after = 0
        passed = 0
        while True:
            with conn.transaction():
                rows = conn.execute(
                    "select quarantine_id, file_id, position, payload_key_version, payload"
                    " from quarantine.records where quarantine_id > %s and payload is not null"
                    " and payload_key_version <> %s order by quarantine_id limit %s"
                    " for update skip locked",
                    (after, current, batch_rows),
                ).fetchall()
                if not rows:
                    break
                sealed = []
                for _, file_id, position, version, blob in rows:
                    aad_subject = f"quarantine:{file_id}"
                    plain = cipher.decrypt_bytes(aad_subject, position, version, blob)
                    sealed.append(cipher.encrypt(aad_subject, position, plain)[1])
                conn.execute(
                    "update quarantine.records q set payload_key_version = %s,"
                    " payload = n.payload from unnest(%s::bigint[], %s::bytea[])"
                    "   as n(quarantine_id, payload) where q.quarantine_id = n.quarantine_id",
                    (current, [r[0] for r in rows], sealed),
                )
            after = rows[-1][0]
            passed += len(rows)
            batches += 1
        done += passed
        if passed == 0:
            return done, batches


def retire_vault_keys(conn: psycopg.Connection, provider: KeyringFileProvider) -> list[int]:
    """Destroy old vault key versions once no vault row or quarantine payload needs them."""
    versions = provider.versions("vault")
    remaining = conn.execute(
        "select (select count(*) from vault.contact_fields where key_version <> %s)"
        " + (select count(*) from quarantine.records where payload is not null"
        "    and payload_key_version <> %s)",
        (versions.current, versions.current),
    ).fetchone()[0]
    if remaining:
        raise RotationError(
            f"{remaining} vault rows or quarantine payloads are still under old key versions;"
            " run `hub keys rotate --vault` to finish re-encryption before retiring"
        )
    conn.commit()
    old = [v for v in versions.available if v != versions.current]
    retired = provider.retire("vault", old)
    with conn.transaction():
        record_audit(conn, "key_retire", f"vault key versions {retired}", len(retired), **_OWNER)
    return retired


# -- token keys -------------------------------------------------------------------------------


def rotate_token_key(
    conn: psycopg.Connection, provider: KeyringFileProvider, policy: FieldPolicy
) -> TokenRotationReport:
    """New token key version; re-key every stored token (see the module docstring)."""
    _lock(conn)
    try:
        rotation_id, before, version, status, resumed = _token_rotation_to_run(conn, provider)
        report = TokenRotationReport(rotation_id, before, version, resumed=resumed)
        tokenizer = provider.tokenizer(version=version)
        if status == "running":
            with conn.transaction():
                _rekey_core(conn, tokenizer, provider.vault_cipher(), policy, report)
                conn.execute(
                    "update vault.key_rotations set status = 'committed' where rotation_id = %s",
                    (rotation_id,),
                )
        if provider.versions("token").current != version:
            provider.promote("token", version)
        tables = _token_tables(conn, exclude={("vault", "contacts")})
        conn.commit()
        for schema, table in tables:
            with conn.transaction():
                count = _rekey_table(conn, schema, table, tokenizer, rotation_id)
            if count:
                name = f"{schema}.{table}"
                report.rows_rekeyed_by_table[name] = (
                    report.rows_rekeyed_by_table.get(name, 0) + count
                )
        with conn.transaction():
            # Rows an ingest with the old key wrote meanwhile (their tokens are mapped by now).
            report.vault_rows_reencrypted += _reencrypt_for_new_subjects(
                conn, provider.vault_cipher()
            )
            report.tokens_mapped = conn.execute(
                "select count(*) from vault.token_rekey where rotation_id = %s", (rotation_id,)
            ).fetchone()[0]
            total = sum(report.rows_rekeyed_by_table.values()) + report.vault_rows_reencrypted
            _finish(conn, rotation_id, total)
            record_audit(conn, "key_rotate", f"token key v{before} -> v{version}", total, **_OWNER)
        return report
    finally:
        _unlock(conn)


def _token_rotation_to_run(
    conn: psycopg.Connection, provider: KeyringFileProvider
) -> tuple[int, int, int, str, bool]:
    """(rotation id, from version, to version, status, resumed): an unfinished one or new."""
    versions = provider.versions("token")
    with conn.transaction():
        unfinished = conn.execute(
            "select rotation_id, from_version, to_version, status from vault.key_rotations"
            " where kind = 'token' and status in ('running', 'committed')"
            " order by rotation_id desc limit 1"
        ).fetchone()
        if unfinished and unfinished[2] in (*versions.pending, versions.current):
            rotation_id, before, version, status = unfinished
            return rotation_id, before, version, status, True
        if unfinished:  # its pending key is gone, so nothing of it was ever committed
            conn.execute(
                "update vault.key_rotations set status = 'abandoned' where rotation_id = %s",
                (unfinished[0],),
            )
    if versions.pending:  # a crash right after the key was added: use that key
        version, resumed = max(versions.pending), True
    else:
        version, resumed = provider.add_version("token", pending=True), False
    return (
        _start(conn, "token", versions.current, version),
        versions.current,
        version,
        "running",
        resumed,
    )


def _rekey_core(
    conn: psycopg.Connection,
    tokenizer: ChainedTokenizer,
    cipher: VaultCipher,
    policy: FieldPolicy,
    report: TokenRotationReport,
) -> None:
    """landing.*, vault.* and person_xref, in the caller's single transaction."""
    rotation_id = report.rotation_id
    # The change log names persons by their old tokens; the resolution below logs every
    # person anew under the new ones (each link changes), so syncs still see them all.
    conn.execute("delete from landing.person_changes")
    conn.execute(
        "create temp table rekey_old_xref on commit drop as"
        " select subject_token, person_token from landing.person_xref"
    )
    for schema, table in [*_token_tables(conn, schemas=("landing",)), ("vault", "identity_keys")]:
        if (schema, table) == ("landing", "person_xref"):
            continue
        count = _rekey_table(conn, schema, table, tokenizer, rotation_id)
        if count:
            report.rows_rekeyed_by_table[f"{schema}.{table}"] = count
    _map_new_tokens(conn, "vault", "contacts", ["subject_token"], tokenizer, rotation_id)
    report.vault_rows_reencrypted = _reencrypt_for_new_subjects(conn, cipher)
    _rekey_table(conn, "landing", "person_xref", tokenizer, rotation_id, ["subject_token"])
    # Person tokens derive from the (re-keyed) identity keys: resolve again, then map.
    resolve_persons(conn, tokenizer, policy)
    report.persons_mapped = conn.execute(
        "insert into vault.token_rekey (old_token, new_token, kind, rotation_id)"
        " select distinct on (o.person_token) o.person_token, x.person_token, 'person', %s"
        " from rekey_old_xref o"
        " join vault.token_rekey m on m.old_token = o.subject_token"
        " join landing.person_xref x on x.subject_token = m.new_token"
        " where o.person_token <> x.person_token"
        " order by o.person_token, x.person_token"
        " on conflict (old_token) do nothing",
        (rotation_id,),
    ).rowcount
    _compress_mapping(conn)
    report.rows_rekeyed_by_table["landing.person_xref"] = conn.execute(
        "select count(*) from landing.person_xref"
    ).fetchone()[0]


def _reencrypt_for_new_subjects(conn: psycopg.Connection, cipher: VaultCipher) -> int:
    """Vault rows under a re-keyed subject token: each value decrypted with the old AAD and
    sealed with the new. Returns how many values. Streams through a server-side cursor in
    chunks, so memory stays flat on large vaults.
    """
    conn.execute("create temp table if not exists rekey_vault (like vault.contacts) on commit drop")
    columns = table_columns(conn)
    # (value, key version) column positions of every field within a row
    places = [
        (f, columns.index(f), columns.index(key_version_column(f))) for f in fields_among(columns)
    ]
    listed = ", ".join(columns)
    moved = rows_moved = 0
    with conn.cursor(name="rekey_vault_rows") as rows:
        rows.execute(
            f"select m.new_token, {', '.join(f'v.{c}' for c in columns)} from vault.contacts v"
            " join vault.token_rekey m on m.old_token = v.subject_token"
        )
        while chunk := rows.fetchmany(CHUNK_ROWS):
            with conn.cursor() as cur, cur.copy(f"copy rekey_vault ({listed}) from stdin") as copy:
                for new, *row in chunk:
                    old, row[0] = row[0], new
                    for field, value, version in places:
                        if row[value] is not None:
                            plain = cipher.decrypt_bytes(old, field, row[version], row[value])
                            row[version], row[value] = cipher.encrypt(new, field, plain)
                            moved += 1
                    copy.write_row(row)
            rows_moved += len(chunk)
    if rows_moved:
        conn.execute(
            "delete from vault.contacts v using vault.token_rekey m"
            " where m.old_token = v.subject_token"
        )
        conn.execute(
            f"insert into vault.contacts ({listed}) select {listed} from rekey_vault"
            " on conflict (subject_token) do nothing"
        )
    conn.execute("truncate rekey_vault")
    return moved


def _rekey_table(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    tokenizer: ChainedTokenizer,
    rotation_id: int,
    columns: list[str] | None = None,
) -> int:
    """Replace every older-version token in the table's token columns; returns rows changed."""
    columns = columns or _token_columns(conn, schema, table, tokenizer.version)
    if not columns:
        return 0
    _map_new_tokens(conn, schema, table, columns, tokenizer, rotation_id)
    assignments = sql.SQL(", ").join(
        sql.SQL(
            "{c} = coalesce((select m.new_token from vault.token_rekey m"
            " where m.old_token = t.{c}), t.{c})"
        ).format(c=sql.Identifier(c))
        for c in columns
    )
    touched = sql.SQL(" or ").join(
        sql.SQL("t.{c} in (select old_token from vault.token_rekey)").format(c=sql.Identifier(c))
        for c in columns
    )
    return conn.execute(
        sql.SQL("update {target} t set {assignments} where {touched}").format(
            target=sql.Identifier(schema, table), assignments=assignments, touched=touched
        )
    ).rowcount


def _map_new_tokens(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    columns: list[str],
    tokenizer: ChainedTokenizer,
    rotation_id: int,
) -> None:
    """Record old -> new for every older-version token in the columns not mapped yet.

    Such tokens are computable from themselves (the chain); streamed in chunks.
    """
    conn.execute(
        "create temp table if not exists rekey_new (old_token text, new_token text) on commit drop"
    )
    for column in columns:
        with conn.cursor(name="rekey_old_values") as values:
            values.execute(
                sql.SQL(
                    "select distinct {c} from {t} where {c} ~ %s and {c} not like %s"
                    " and not exists (select 1 from vault.token_rekey m where m.old_token = {c})"
                ).format(c=sql.Identifier(column), t=sql.Identifier(schema, table)),
                (SQL_TOKEN_PATTERN, f"t{tokenizer.version}\\_%"),
            )
            while chunk := values.fetchmany(CHUNK_ROWS):
                with conn.cursor() as cur, cur.copy("copy rekey_new from stdin") as copy:
                    for (old,) in chunk:
                        copy.write_row((old, tokenizer.rekey(old)))
    conn.execute(
        "insert into vault.token_rekey (old_token, new_token, kind, rotation_id)"
        " select old_token, new_token, 'chained', %s from rekey_new"
        " on conflict (old_token) do nothing",
        (rotation_id,),
    )
    conn.execute("truncate rekey_new")
    _compress_mapping(conn)


def _compress_mapping(conn: psycopg.Connection) -> None:
    """Point mappings of earlier rotations at the newest token (t1 -> t2 -> t3 becomes t1 -> t3)."""
    conn.execute(
        "update vault.token_rekey a set new_token = b.new_token from vault.token_rekey b"
        " where a.new_token = b.old_token"
    )


def _token_tables(
    conn: psycopg.Connection,
    schemas: tuple[str, ...] | None = None,
    exclude: set[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """Base tables with text columns, outside the audit log and the disclosure records."""
    rows = conn.execute(
        "select distinct c.table_schema, c.table_name from information_schema.columns c"
        " join information_schema.tables t using (table_schema, table_name)"
        " where t.table_type = 'BASE TABLE' and c.data_type = 'text'"
        " and c.table_schema <> all(%s) and c.table_schema not like 'pg\\_%%'"
        " and (%s::text[] is null or c.table_schema = any(%s))"
        " order by 1, 2",
        (
            list(SYSTEM_SCHEMAS + UNTOUCHED_SCHEMAS),
            schemas and list(schemas),
            schemas and list(schemas),
        ),
    ).fetchall()
    skip = DISCLOSURE_TABLES | MAPPING_TABLES | (exclude or set())
    return [(schema, table) for schema, table in rows if (schema, table) not in skip]


def _token_columns(conn: psycopg.Connection, schema: str, table: str, version: int) -> list[str]:
    """Text columns holding at least one token of an older version than `version`."""
    columns = [
        name
        for (name,) in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s"
            " and table_name = %s and data_type = 'text' order by ordinal_position",
            (schema, table),
        )
    ]
    found = []
    for column in columns:
        hit = conn.execute(
            sql.SQL("select 1 from {t} where {c} ~ %s and {c} not like %s limit 1").format(
                t=sql.Identifier(schema, table), c=sql.Identifier(column)
            ),
            (SQL_TOKEN_PATTERN, f"t{version}\\_%"),
        ).fetchone()
        if hit:
            found.append(column)
    return found


# -- bookkeeping ------------------------------------------------------------------------------

_OWNER = {"purpose": "security", "role": "hub_owner"}


def _start(conn: psycopg.Connection, kind: str, before: int, version: int) -> int:
    with conn.transaction():
        rotation_id = conn.execute(
            "insert into vault.key_rotations (kind, from_version, to_version)"
            " values (%s, %s, %s) returning rotation_id",
            (kind, before, version),
        ).fetchone()[0]
        record_audit(conn, "key_rotate_start", f"{kind} key v{before} -> v{version}", 0, **_OWNER)
    return rotation_id


def _finish(conn: psycopg.Connection, rotation_id: int, rows: int) -> None:
    conn.execute(
        "update vault.key_rotations set status = 'finished', finished_at = now(),"
        " rows_rekeyed = %s where rotation_id = %s",
        (rows, rotation_id),
    )


def _lock(conn: psycopg.Connection) -> None:
    if not conn.execute("select pg_try_advisory_lock(%s)", (ROTATION_LOCK,)).fetchone()[0]:
        conn.commit()
        raise RotationError("another key rotation is running on this warehouse")
    conn.commit()


def _unlock(conn: psycopg.Connection) -> None:
    conn.rollback()
    conn.execute("select pg_advisory_unlock(%s)", (ROTATION_LOCK,))
    conn.commit()

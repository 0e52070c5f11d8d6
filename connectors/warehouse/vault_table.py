"""The vault's shape: vault.contacts holds one row per subject, each sealed contact field a
group of three columns (`<field>` the ciphertext, `<field>_key_version`, `<field>_effective_at`);
vault.contact_fields shows the same values one row per field, as readers and tools use them.

Why one row per subject: the loader merges every record's contact fields into place, and
merging a patient's eight fields as eight rows cost PostgreSQL 43-46 µs a patient (eight
heap tuples, eight entries in each index), one row 9 µs, duplicates in the batch included
(bench/reading.md). Each field keeps its own key version and effective time, so the newest
source value still wins field by field, and each ciphertext's AAD still names (subject,
field, key version): the encryption is unchanged.

vault.contact_fields is a view with INSTEAD OF triggers: reading it, and inserting, updating
or deleting a field through it (COPY included), work as on the table it replaces; bulk
writers (the loader, key rotation, forget) use vault.contacts directly.
"""

from __future__ import annotations

import psycopg

from domain.policy import (
    EFFECTIVE_AT_SUFFIX,
    KEY_VERSION_SUFFIX,
    SQL_IDENTIFIER,
    FieldPolicy,
    vault_fields,
)

TABLE = "vault.contacts"
VIEW = "vault.contact_fields"
# What a load stages per record: the subject, the record's effective time, and each field's
# ciphertext and key version (null when the record has no value for it).
STAGING = "vault_incoming"
# The longest field name whose derived column names (_effective_at) fit PostgreSQL's 63.
VAULT_FIELD_MAX = 63 - len(EFFECTIVE_AT_SUFFIX)


def key_version_column(field: str) -> str:
    return field + KEY_VERSION_SUFFIX


def effective_at_column(field: str) -> str:
    return field + EFFECTIVE_AT_SUFFIX


def staging_columns(fields: list[str]) -> list[str]:
    """The staging table's columns in COPY order (the loader's rows follow it)."""
    columns = ["subject_token", "effective_at"]
    for field in fields:
        columns += [field, key_version_column(field)]
    return columns


def staging_ddl(fields: list[str]) -> str:
    listed = "".join(f", {f} bytea, {key_version_column(f)} integer" for f in fields)
    return (
        f"create temp table if not exists {STAGING} (subject_token text not null,"
        f" effective_at timestamptz{listed}, arrival bigint generated always as identity)"
        " on commit drop"
    )


def merge_sql(fields: list[str]) -> str:
    """Merge the staged records into vault.contacts, field by field: the newest source value
    wins (the source's effective time, not arrival order; on a tie the record staged last,
    as on landing). A row written carries the load's change epoch (parameter 1): a sync
    looks only at those (changes.py); a row no field of which is newer is left alone."""
    order = "order by effective_at desc nulls last, arrival desc"
    picked, names, updates, newer_any = [], [], [], []
    for f in fields:
        version, at = key_version_column(f), effective_at_column(f)
        for value in (f, version, "effective_at"):
            picked.append(f"(array_agg({value} {order}) filter (where {f} is not null))[1]")
        names += [f, version, at]
        newer = (
            f"(excluded.{f} is not null and ({TABLE}.{f} is null or {TABLE}.{at} is null"
            f" or excluded.{at} >= {TABLE}.{at}))"
        )
        newer_any.append(newer)
        updates += [
            f"{c} = case when {newer} then excluded.{c} else {TABLE}.{c} end"
            for c in (f, version, at)
        ]
    return (
        f"insert into {TABLE} (subject_token, {', '.join(names)}, change_epoch)"
        f" select subject_token, {', '.join(picked)}, %s from {STAGING} group by subject_token"
        f" on conflict (subject_token) do update set {', '.join(updates)},"
        " change_epoch = excluded.change_epoch, updated_at = now()"
        f" where {' or '.join(newer_any)}"
    )


def table_columns(conn: psycopg.Connection) -> list[str]:
    """vault.contacts' columns, in order."""
    return [
        name
        for (name,) in conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = 'vault' and table_name = 'contacts' order by ordinal_position"
        )
    ]


def table_fields(conn: psycopg.Connection) -> list[str]:
    """The fields vault.contacts has columns for, in column order."""
    return fields_among(table_columns(conn))


def fields_among(columns: list[str]) -> list[str]:
    """The fields whose three columns are all among `columns`, in their order."""
    present = set(columns)
    return [
        c for c in columns if key_version_column(c) in present and effective_at_column(c) in present
    ]


def ensure_vault(conn: psycopg.Connection, policy: FieldPolicy) -> None:
    """Create vault.contacts with a column group per vault field of the policy (fields an
    older policy sealed keep theirs), the view and its triggers; move a warehouse's vault
    from the one-row-per-field table once. Quiet when all is in place."""
    conn.execute(
        f"create table if not exists {TABLE} (subject_token text primary key,"
        " change_epoch bigint not null default 0, updated_at timestamptz not null default now())"
    )
    row = conn.execute(
        "select relkind = 'r' from pg_class where oid = to_regclass(%s)", (VIEW,)
    ).fetchone()
    narrow = bool(row and row[0])  # the vault before this module: a table, a row per field
    narrow_fields = (
        [r[0] for r in conn.execute(f"select distinct column_name from {VIEW} order by 1")]
        if narrow
        else []
    )
    for field in narrow_fields:  # each becomes column names in the DDL below
        if not SQL_IDENTIFIER.fullmatch(field) or len(field) > VAULT_FIELD_MAX:
            raise ValueError(f"{VIEW} holds a column name that is no plain identifier: {field!r}")
    present = table_fields(conn)
    wanted = [*present]
    for field in [*vault_fields(policy), *narrow_fields]:
        if field not in wanted:
            wanted.append(field)
    added = [f for f in wanted if f not in present]
    for field in added:
        conn.execute(
            f"alter table {TABLE} add column {field} bytea,"
            f" add column {key_version_column(field)} integer,"
            f" add column {effective_at_column(field)} timestamptz"
        )
    if narrow:
        _move_narrow_rows(conn, narrow_fields)
    # A B-tree, not a BRIN: an incremental load updates rows all over the table, and a BRIN
    # range holding one of them makes every row of its 128 pages a candidate.
    # (Looked up first: CREATE INDEX IF NOT EXISTS locks the busy table even when it exists.)
    if conn.execute("select to_regclass('vault.contacts_change_epoch')").fetchone()[0] is None:
        conn.execute(f"create index contacts_change_epoch on {TABLE} (change_epoch)")
    is_view = conn.execute(
        "select relkind = 'v' from pg_class where oid = to_regclass(%s)", (VIEW,)
    ).fetchone()
    if added or not (is_view and is_view[0]):
        _create_view(conn, wanted)


def _move_narrow_rows(conn: psycopg.Connection, fields: list[str]) -> None:
    """One row per field (the vault before this module) into one row per subject."""
    if not fields:  # an empty vault
        conn.execute(f"drop table {VIEW}")
        return
    names, picked = [], []
    for f in fields:
        names += [f, key_version_column(f), effective_at_column(f)]
        picked += [
            f"(array_agg(ciphertext) filter (where column_name = '{f}'))[1]",
            f"(array_agg(key_version) filter (where column_name = '{f}'))[1]",
            f"(array_agg(effective_at) filter (where column_name = '{f}'))[1]",
        ]
    (epoch,) = conn.execute(  # a vault older than change epochs has none: 0, as it got then
        "select case when exists (select from information_schema.columns where table_schema"
        " = 'vault' and table_name = 'contact_fields' and column_name = 'change_epoch')"
        " then 'max(change_epoch)' else '0' end"
    ).fetchone()
    conn.execute(
        f"insert into {TABLE} (subject_token, {', '.join(names)}, change_epoch, updated_at)"
        f" select subject_token, {', '.join(picked)}, {epoch}, max(updated_at)"
        f" from {VIEW} group by subject_token on conflict (subject_token) do nothing"
    )
    conn.execute(f"drop table {VIEW}")


def _create_view(conn: psycopg.Connection, fields: list[str]) -> None:
    values = ", ".join(
        f"('{f}'::text, c.{key_version_column(f)}, c.{f}, c.{effective_at_column(f)})"
        for f in fields
    )
    conn.execute(f"drop view if exists {VIEW}")
    conn.execute(
        f"create view {VIEW} as select c.subject_token, f.column_name, f.key_version,"
        " f.ciphertext, f.effective_at, c.updated_at, c.change_epoch"
        f" from {TABLE} c cross join lateral (values {values})"
        " as f (column_name, key_version, ciphertext, effective_at)"
        " where f.ciphertext is not null"
    )
    conn.execute(_WRITE_THROUGH)
    conn.execute(
        f"create trigger contact_fields_write instead of insert or update or delete on {VIEW}"
        " for each row execute function vault.contact_fields_write()"
    )


# Writes through the view land in the field's columns of the subject's row. Column names
# come from the row written and are quoted (%I): a name that is no vault field fails. (The
# suffixes are domain.policy's KEY_VERSION_SUFFIX and EFFECTIVE_AT_SUFFIX.)
_WRITE_THROUGH = """
create or replace function vault.contact_fields_write() returns trigger
language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        execute format(
            'update vault.contacts set %I = null, %I = null, %I = null where subject_token = $1',
            old.column_name, old.column_name || '_key_version', old.column_name || '_effective_at'
        ) using old.subject_token;
    end if;
    if tg_op = 'DELETE' then
        return old;
    end if;
    execute format(
        'insert into vault.contacts (subject_token, %1$I, %2$I, %3$I, change_epoch)'
        ' values ($1, $2, $3, $4, $5) on conflict (subject_token) do update set'
        ' %1$I = excluded.%1$I, %2$I = excluded.%2$I, %3$I = excluded.%3$I,'
        ' change_epoch = greatest(vault.contacts.change_epoch, excluded.change_epoch),'
        ' updated_at = now()',
        new.column_name, new.column_name || '_key_version', new.column_name || '_effective_at'
    ) using new.subject_token, new.ciphertext, new.key_version, new.effective_at,
        coalesce(new.change_epoch, 0);
    return new;
end
$$
"""

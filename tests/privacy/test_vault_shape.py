"""vault.contacts holds a row per subject; vault.contact_fields shows it a row per field.

The loader's merge keeps the newest source value of each field (connectors/warehouse/
vault_table.py); a warehouse whose vault is still one row per field moves to the new shape
at its next start, values unchanged; the view reads and writes like the table it replaced.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.warehouse.vault_table import merge_sql, staging_columns, staging_ddl
from domain.policy import default_policy, vault_fields

FIELDS = ["email", "phone", "city"]
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def vault_db(make_database):
    return make_database()


# A staged record: (subject, effective time or None, {field: ciphertext}).
records = st.tuples(
    st.sampled_from(["s1", "s2", "s3"]),
    st.one_of(st.none(), st.integers(0, 3).map(lambda d: T0 + dt.timedelta(days=d))),
    st.dictionaries(st.sampled_from(FIELDS), st.binary(min_size=1, max_size=4), min_size=1),
)


def _expected(batches):
    """The rule in its plain form, batch after batch: within a batch a field's value with the
    latest effective time wins (no time loses to any; on a tie the record staged later);
    it replaces the stored value unless that one has a time and the batch's is older or none."""
    stored: dict[tuple[str, str], tuple[bytes, dt.datetime | None]] = {}
    for batch in batches:
        winners: dict[tuple[str, str], tuple[tuple, bytes, dt.datetime | None]] = {}
        for position, (subject, at, values) in enumerate(batch):
            rank = (at is not None, at or T0, position)
            for field, blob in values.items():
                if (subject, field) not in winners or rank > winners[(subject, field)][0]:
                    winners[(subject, field)] = (rank, blob, at)
        for key, (_, blob, at) in winners.items():
            old = stored.get(key)
            if old is None or old[1] is None or (at is not None and at >= old[1]):
                stored[key] = (blob, at)
    return stored


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(records, min_size=1, max_size=6), min_size=1, max_size=3))
def test_the_merge_keeps_each_fields_newest_value(vault_db, batches):
    with vault_db.connect() as conn:
        conn.execute("create temp table contacts_copy as select * from vault.contacts limit 0")
        conn.execute(staging_ddl(FIELDS))
        merge = merge_sql(FIELDS).replace("vault.contacts", "pg_temp.contacts_copy")
        conn.execute("alter table pg_temp.contacts_copy add primary key (subject_token)")
        for f in FIELDS:  # the default policy seals these three too
            assert f in vault_fields(default_policy())
        columns = staging_columns(FIELDS)
        for batch in batches:
            with conn.cursor().copy(f"copy vault_incoming ({', '.join(columns)}) from stdin") as cp:
                for subject, at, values in batch:
                    row = [subject, at]
                    for f in FIELDS:
                        row += [values.get(f), 1 if f in values else None]
                    cp.write_row(row)
            conn.execute(merge, (1,))
            conn.execute("truncate vault_incoming")
        got = {}
        for row in conn.execute(
            f"select subject_token, {', '.join(f'{f}, {f}_effective_at' for f in FIELDS)}"
            " from pg_temp.contacts_copy"
        ):
            for i, f in enumerate(FIELDS):
                if row[1 + 2 * i] is not None:
                    got[(row[0], f)] = (bytes(row[1 + 2 * i]), row[2 + 2 * i])
        conn.rollback()
    assert got == _expected(batches)


NARROW_ROWS = [
    ("s1", "email", 1, b"e1", T0, 4),
    ("s1", "fax", 2, b"f1", None, 7),  # a field the policy no longer seals
    ("s2", "phone", 1, b"p2", T0, 3),
]


def _narrow_vault(warehouse, rows) -> None:
    """Give a fresh warehouse the vault as it was before vault.contacts: a row per field."""
    with warehouse.connect() as conn:
        conn.execute("drop view vault.contact_fields")
        conn.execute("drop table vault.contacts")
        conn.execute(
            "create table vault.contact_fields (subject_token text not null, column_name text"
            " not null, key_version integer not null, ciphertext bytea not null, effective_at"
            " timestamptz, updated_at timestamptz not null default now(), change_epoch bigint"
            " not null default 0, primary key (subject_token, column_name))"
        )
        for row in rows:
            conn.execute(
                "insert into vault.contact_fields (subject_token, column_name, key_version,"
                " ciphertext, effective_at, change_epoch) values (%s, %s, %s, %s, %s, %s)",
                row,
            )


@pytest.mark.parametrize("rows", [NARROW_ROWS, []], ids=["values", "empty"])
def test_a_vault_of_one_row_per_field_moves_to_one_row_per_subject(make_database, rows):
    warehouse = make_database()
    _narrow_vault(warehouse, rows)
    warehouse.ensure_schema()
    warehouse.ensure_schema()  # and again: nothing left to move
    with warehouse.connect() as conn:
        kinds = conn.execute(
            "select relname, relkind from pg_class where relnamespace = 'vault'::regnamespace"
            " and relname in ('contacts', 'contact_fields') order by 1"
        ).fetchall()
        seen = conn.execute(
            "select subject_token, column_name, key_version, ciphertext, effective_at"
            " from vault.contact_fields order by 1, 2"
        ).fetchall()
        epochs = dict(conn.execute("select subject_token, change_epoch from vault.contacts"))
    assert kinds == [("contact_fields", "v"), ("contacts", "r")]
    assert seen == [(s, c, v, b, at) for s, c, v, b, at, _ in sorted(rows)]
    # a subject's row: the newest of its fields' epochs
    assert epochs == ({"s1": 7, "s2": 3} if rows else {})


def test_a_moved_column_name_that_is_no_identifier_is_refused(make_database):
    """Field names become column names of vault.contacts: one the policy could never have
    written (a tampered table) stops the move, naming it, before any DDL runs."""
    warehouse = make_database()
    _narrow_vault(warehouse, [("s1", "x; drop table audit.events", 1, b"x", None, 0)])
    with pytest.raises(ValueError, match=r"no plain identifier: 'x; drop table audit\.events'"):
        warehouse.ensure_schema()


def test_the_view_reads_and_writes_like_a_table_of_fields(vault_db):
    with vault_db.connect() as conn:
        with conn.cursor().copy(
            "copy vault.contact_fields (subject_token, column_name, key_version, ciphertext,"
            " effective_at) from stdin"
        ) as cp:
            cp.write_row(("w1", "email", 1, b"a", T0))
            cp.write_row(("w1", "phone", 1, b"b", None))
        conn.execute(
            "insert into vault.contact_fields (subject_token, column_name, key_version,"
            " ciphertext, change_epoch) values ('w2', 'city', 3, 'c', 5)"
        )
        conn.execute(
            "update vault.contact_fields set key_version = 2, ciphertext = 'z'"
            " where subject_token = 'w1' and column_name = 'email'"
        )
        deleted = conn.execute(
            "delete from vault.contact_fields where subject_token = 'w1' and column_name = 'phone'"
        ).rowcount
        seen = conn.execute(
            "select subject_token, column_name, key_version, ciphertext, effective_at,"
            " change_epoch from vault.contact_fields where subject_token like 'w_' order by 1, 2"
        ).fetchall()
        conn.rollback()
    assert deleted == 1
    assert seen == [("w1", "email", 2, b"z", T0, 0), ("w2", "city", 3, b"c", None, 5)]

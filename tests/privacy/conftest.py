"""Fixtures for the privacy suite: isolated databases on the session's embedded server.

Key rotation, forgetting and purging rewrite data, so those tests get their own database (a
CREATE DATABASE on the same server) and their own keyring, instead of disturbing the shared
session database other test modules read. A populated database is built once per session
and cloned (CREATE DATABASE ... TEMPLATE) for each test that needs one.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest

from connectors.warehouse.database import Warehouse
from domain.keys import KeyringFileProvider
from tests.privacy.population import load_population


def _database_url(warehouse: Warehouse, name: str) -> str:
    return urlunparse(urlparse(warehouse.url())._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def make_database(warehouse: Warehouse) -> Iterator[Callable[..., Warehouse]]:
    """A factory of fresh databases (hub schema applied) on the session's server; with
    `template`, a copy of that database."""
    created: list[str] = []

    def make(template: str | None = None) -> Warehouse:
        name = f"hub_privacy_{uuid.uuid4().hex[:10]}"
        clause = f" template {template}" if template else ""
        with psycopg.connect(warehouse.url(), autocommit=True) as conn:
            conn.execute(f"create database {name}{clause}")
        created.append(name)
        isolated = Warehouse(_database_url(warehouse, name), warehouse.state_path)
        if template is None:
            isolated.ensure_schema()
        return isolated

    yield make
    with psycopg.connect(warehouse.url(), autocommit=True) as conn:
        for name in reversed(created):
            conn.execute(f"drop database if exists {name} with (force)")


@pytest.fixture(scope="session")
def generated_population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small deterministic synthetic population (FHIR, HL7, CRM) for the privacy suite."""
    from synthetic.generate import generate

    out = tmp_path_factory.mktemp("privacy-population")
    generate(out, patients=120, seed=41)
    return out


@pytest.fixture(scope="session")
def populated_template(make_database, generated_population, tmp_path_factory):
    """(database name, keyring folder) of a warehouse loaded once with the population."""
    keys = tmp_path_factory.mktemp("template-keys")
    warehouse = make_database()
    load_population(warehouse, KeyringFileProvider(keys / "keyring.json"), generated_population)
    return urlparse(warehouse.url()).path.lstrip("/"), keys


@pytest.fixture
def keyring(tmp_path: Path) -> KeyringFileProvider:
    return KeyringFileProvider(tmp_path / "keys" / "keyring.json")


@pytest.fixture
def populated_copy(make_database, populated_template, tmp_path):
    """A private copy of the populated warehouse and of its keyring (free to rotate)."""
    name, keys = populated_template
    folder = tmp_path / "keys"
    shutil.copytree(keys, folder, ignore=shutil.ignore_patterns(".*"))
    return make_database(template=name), KeyringFileProvider(folder / "keyring.json")

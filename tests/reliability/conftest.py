"""Fixtures of the reliability suites: prepared warehouse states to clone, engines, figures."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from connectors.warehouse.database import Warehouse
from pipelines.resources import PrivacyResource
from tests.reliability.figures import FIGURES, Figures
from tests.reliability.support import DBT_PROJECT, Databases

POPULATION = 150  # synthetic patients in the prepared warehouse
SEED = 5
ENGINE_TOKEN = "reliability-token"
ENGINE_SECRET = "reliability-signing-secret"
BUILD_SECONDS: dict[str, float] = {}  # template -> how long its dbt build took (kill timing)
# dbt reads the database name from the environment; runs on one name reuse the parse.
DBT_DATABASE = "rel_dbt_work"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/reliability/" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
        FIGURES.record_outcome(report.nodeid, outcome)


def pytest_sessionfinish(session: pytest.Session) -> None:
    FIGURES.write()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return FIGURES


@pytest.fixture(scope="session")
def databases(warehouse: Warehouse) -> Iterator[Databases]:
    dbs = Databases(warehouse)
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def privacy(hub_state: Path) -> PrivacyResource:
    return PrivacyResource()


@pytest.fixture(scope="session")
def cipher(privacy: PrivacyResource):
    return privacy.vault_cipher()


@pytest.fixture(scope="session")
def protector(privacy: PrivacyResource):
    return privacy.protector()


@pytest.fixture(scope="session")
def population(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A small synthetic population (FHIR, HL7, CRM), with its deliberately bad records."""
    from synthetic.generate import generate

    folder = tmp_path_factory.mktemp("population")
    generate(folder, patients=POPULATION, seed=SEED)
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")


@pytest.fixture(scope="session")
def schema_template(databases: Databases) -> str:
    """An empty hub warehouse: schemas and tables, no rows."""
    databases.create("rel_schema").ensure_schema()
    return "rel_schema"


@pytest.fixture(scope="session")
def landed_template(databases: Databases, schema_template: str, population, privacy) -> str:
    """The population ingested and resolved to persons (the state dbt starts from)."""
    from services.identity import resolve_persons
    from services.ingest import ingest_uris

    warehouse = databases.create("rel_landed", template=schema_template)
    with warehouse.connect() as conn:
        results = ingest_uris(conn, population, privacy.protector())
        assert all(r.reconciled for r in results)
        resolve_persons(conn, privacy.tokenizer(), privacy.policy())
    return "rel_landed"


@contextmanager
def dbt_environment(warehouse: Warehouse) -> Iterator[dict[str, str]]:
    env = {**warehouse.dbt_env(), "DO_NOT_TRACK": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_dbt_in_process(warehouse: Warehouse, workdir: Path, *args: str) -> Any:
    from dbt.cli.main import dbtRunner

    with dbt_environment(warehouse):
        return dbtRunner().invoke(
            [
                *args,
                "--quiet",
                "--project-dir",
                str(DBT_PROJECT),
                "--profiles-dir",
                str(DBT_PROJECT),
                "--target-path",
                str(workdir / "target"),
                "--log-path",
                str(workdir / "logs"),
            ]
        )


@pytest.fixture(scope="session")
def dbt_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One target folder for every dbt run of the session, so runs after the first one
    parse partially (a new database *name* would force a full parse: see DBT_DATABASE)."""
    return tmp_path_factory.mktemp("dbt")


@pytest.fixture(scope="session")
def built_template(databases: Databases, landed_template: str, dbt_workdir: Path) -> str:
    """The landed state with every dbt model built: audiences ready to sync."""
    warehouse = databases.create(DBT_DATABASE, template=landed_template)
    started = time.monotonic()
    result = run_dbt_in_process(warehouse, dbt_workdir, "build")
    assert result.success, result.exception
    BUILD_SECONDS["rel_built"] = time.monotonic() - started
    databases.rename(DBT_DATABASE, "rel_built")
    return "rel_built"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start SANDBOX engines (fixed credentials); all are stopped at the end of the test."""
    from sandbox.engine import SandboxEngine

    engines: list[SandboxEngine] = []

    def start(**kwargs: Any) -> SandboxEngine:
        engine = SandboxEngine(
            tmp_path / f"engine{len(engines)}",
            token=ENGINE_TOKEN,
            signing_secret=ENGINE_SECRET,
            **kwargs,
        )
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()

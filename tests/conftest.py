"""Shared fixtures: one real embedded PostgreSQL per test session, state in a temp folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.warehouse.database import Warehouse

os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def hub_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private state folder (keyring, embedded database, sandbox) for the whole session."""
    state = tmp_path_factory.mktemp("hub-state")
    previous = os.environ.get("HUB_STATE_DIR")
    os.environ["HUB_STATE_DIR"] = str(state)
    os.environ.pop("DATABASE_URL", None)
    yield state
    if previous is None:
        os.environ.pop("HUB_STATE_DIR", None)
    else:
        os.environ["HUB_STATE_DIR"] = previous


@pytest.fixture(scope="session")
def warehouse(hub_state: Path) -> Warehouse:
    """The real embedded PostgreSQL with the hub's schemas (stopped when the session ends)."""
    warehouse = Warehouse(database_url=None, state_path=hub_state)
    warehouse.ensure_schema()
    return warehouse


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public sample data beside the repository (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"public sample data not found at {SHARED_DATA}")
    return SHARED_DATA

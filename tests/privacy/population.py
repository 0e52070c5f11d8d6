"""Helpers to load a generated population into a warehouse, as the pipeline does."""

from __future__ import annotations

from pathlib import Path

from connectors.warehouse.database import Warehouse
from domain.keys import KeyringFileProvider
from domain.policy import default_policy
from domain.protect import Protector


def population_files(folder: Path) -> list[str]:
    return [
        str(p)
        for sub in ("fhir", "hl7", "crm")
        for p in sorted((folder / sub).glob("*"))
        if p.is_file()
    ]


def load_population(warehouse: Warehouse, provider: KeyringFileProvider, folder: Path) -> None:
    """Ingest every generated file and resolve persons, as the pipeline does."""
    from services.identity import resolve_persons
    from services.ingest import ingest_uris

    protector = Protector(default_policy(), provider.tokenizer(), provider.vault_cipher())
    with warehouse.connect() as conn:
        ingest_uris(conn, population_files(folder), protector)
        resolve_persons(conn, provider.tokenizer(), default_policy())

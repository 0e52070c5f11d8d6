"""Hostile files through the real ingest path into the session warehouse: nothing crashes,
every record ends loaded or quarantined with a reason, and no canary PHI escapes."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from connectors.warehouse.database import Warehouse
from connectors.warehouse.loader import FileLoadResult, file_fingerprint
from domain.reasons import REASONS
from services.ingest import ingest_uris
from tests.reliability.corpus.build import (
    CANARIES,
    FILES,
    INJECTION_MARKERS,
    PWNED_MARKER,
    corpus,
    crm_row,
    large_corpus,
)

CORPUS = sorted(FILES.iterdir())
# Modules whose exceptions are the hub's own typed errors (a file-level refusal, by design).
OWN_MODULES = ("connectors.", "services.", "domain.")


def _non_vault_text(conn: psycopg.Connection) -> dict[str, str]:
    """Every table outside the vault, as text (encrypted payload columns left out)."""
    tables = conn.execute(
        "select table_schema, table_name from information_schema.tables"
        " where table_schema in ('landing', 'quarantine', 'activation', 'engagement', 'audit')"
        " and table_type = 'BASE TABLE'"
    ).fetchall()
    dumps = {}
    for schema, table in tables:
        rows = conn.execute(
            f'select (to_jsonb(t) - \'payload\')::text from "{schema}"."{table}" t'
        ).fetchall()
        dumps[f"{schema}.{table}"] = "\n".join(text for (text,) in rows)
    return dumps


def _ingest_one(warehouse: Warehouse, protector, path: Path) -> FileLoadResult | Exception:
    with warehouse.connect() as conn:
        try:
            [result] = ingest_uris(conn, [str(path)], protector)
        except Exception as error:  # judged below: typed, names the file, no PHI
            return error
    return result


def _check_accounted(warehouse: Warehouse, path: Path, outcome, figures) -> None:
    figures.add("corpus_files")
    if isinstance(outcome, Exception):
        text = f"{type(outcome).__name__}: {outcome}"
        assert type(outcome).__module__.startswith(OWN_MODULES), text
        assert path.name in str(outcome), f"the error does not name the file: {text}"
        assert not [c for c in CANARIES if c in text], text
        figures.add("corpus_file_level_refusals")
        return
    result = outcome
    assert result.reconciled, result.as_dict()
    assert not result.skipped, "the corpus file was already loaded by an earlier test"
    _, sha = file_fingerprint(str(path))
    with warehouse.connect() as conn:
        manifest = conn.execute(
            "select file_id, records_read, records_loaded, records_quarantined"
            " from landing.source_files where sha256 = %s and source = %s",
            (sha, result.source),
        ).fetchone()
        rejected = conn.execute(
            "select reason, message from quarantine.records where file_id = %s",
            (result.file_id,),
        ).fetchall()
    assert manifest == (result.file_id, result.read, result.loaded, result.quarantined)
    assert len(rejected) == result.quarantined
    for reason, message in rejected:
        assert reason in REASONS
        assert not [c for c in CANARIES if c in message], message
    figures.add("corpus_records_read", result.read)
    figures.add("corpus_records_loaded", result.loaded)
    figures.add("corpus_records_quarantined", result.quarantined)


def test_committed_corpus_matches_its_builder() -> None:
    """The files under corpus/files are exactly what corpus/build.py writes."""
    expected = corpus()
    assert sorted(expected) == [p.name for p in CORPUS]
    for path in CORPUS:
        assert path.read_bytes() == expected[path.name], path.name


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_hostile_file_is_accounted_for_without_phi(path: Path, warehouse, protector, figures):
    outcome = _ingest_one(warehouse, protector, path)
    _check_accounted(warehouse, path, outcome, figures)


@pytest.mark.parametrize("name", sorted(large_corpus()))
def test_oversized_input_is_accounted_for_without_phi(
    name: str, warehouse, protector, figures, tmp_path: Path
):
    path = tmp_path / name
    path.write_bytes(large_corpus()[name]())
    outcome = _ingest_one(warehouse, protector, path)
    _check_accounted(warehouse, path, outcome, figures)
    if name.startswith(("large_fhir_line", "large_hl7_message")):
        assert isinstance(outcome, FileLoadResult)
        assert outcome.quarantined_by_reason["RECORD_TOO_LARGE"] == 1
        assert outcome.loaded == 2  # the records around the giant one still load


def test_no_canary_reaches_any_table_outside_the_vault(warehouse, protector):
    """After the whole corpus: canaries live only encrypted (vault, quarantine payload)."""
    for path in CORPUS:  # no-op for files already loaded (same content hash)
        _ingest_one(warehouse, protector, path)
    with warehouse.connect() as conn:
        dumps = _non_vault_text(conn)
    leaks = {c: [t for t, text in dumps.items() if c in text] for c in CANARIES}
    assert not {c: where for c, where in leaks.items() if where}


def test_injection_cells_are_never_run_nor_stored_in_clear(warehouse, protector, tmp_path):
    """Spreadsheet formulas and shell/SQL payloads in CSV cells are vaulted or dropped."""
    PWNED_MARKER.unlink(missing_ok=True)
    outcome = _ingest_one(warehouse, protector, FILES / "crm_injection.csv")
    assert isinstance(outcome, FileLoadResult)
    with warehouse.connect() as conn:
        dumps = _non_vault_text(conn)
        # The SQL payload did nothing: the vault is still there and still readable.
        assert conn.execute("select count(*) from vault.contact_fields").fetchone()[0] > 0
    assert not PWNED_MARKER.exists()
    found = {p: [t for t, text in dumps.items() if p in text] for p in INJECTION_MARKERS}
    assert not {p: where for p, where in found.items() if where}
    assert outcome.quarantined_by_reason.keys() <= {
        "CRM_BAD_EMAIL",
        "CRM_BAD_BOOLEAN",
        "CRM_BAD_DATE",
    }


def test_a_long_cell_after_a_ragged_row_does_not_swallow_the_rest_of_the_file(
    warehouse, protector, tmp_path
):
    path = tmp_path / "crm_long_notes.csv"
    from tests.reliability.corpus.build import _csv

    rows = [
        crm_row(contact_id="CLONG001"),
        crm_row(contact_id="CLONG002")[:4],  # ragged: the reader switches to the csv module
        crm_row(contact_id="CLONG003", notes="N" * 200_000),  # legitimate, just long
        crm_row(contact_id="CLONG004"),
    ]
    path.write_bytes(_csv(rows))
    outcome = _ingest_one(warehouse, protector, path)
    assert isinstance(outcome, FileLoadResult)
    assert (outcome.read, outcome.loaded, outcome.quarantined) == (4, 3, 1)

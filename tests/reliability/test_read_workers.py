"""Large files are parsed and protected in read worker processes (connectors/warehouse/
read_worker.py); what lands must be what the loading process itself would have landed."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from connectors.warehouse import read_worker
from connectors.warehouse.loader import MissingColumnsError
from services.ingest import ingest_uris
from tests.reliability.support import Databases, differences, snapshot


def _ingest(databases: Databases, name: str, template: str, uris: list[str], privacy):
    warehouse = databases.create(name, template=template)
    protector = privacy.protector()
    with warehouse.connect() as conn:
        results = ingest_uris(conn, uris, protector)
    return warehouse, protector, [r.as_dict() for r in results]


def test_files_read_in_workers_land_as_read_in_the_loading_process(
    databases: Databases, schema_template, population, privacy, cipher, monkeypatch
):
    """Every file of the population (FHIR, HL7, CRM, with their bad records) through a worker
    against all of them in process: the same rows, quarantine, audit, counts and counters."""
    monkeypatch.setattr(read_worker, "WORKER_MIN_BYTES", 1 << 40)
    inline, inline_protector, inline_results = _ingest(
        databases, "rel_read_inline", schema_template, population, privacy
    )
    monkeypatch.setattr(read_worker, "WORKER_MIN_BYTES", 0)
    workers, worker_protector, worker_results = _ingest(
        databases, "rel_read_workers", schema_template, population, privacy
    )
    assert worker_results == inline_results
    assert any(r["quarantined"] for r in worker_results)  # the bad records went through too
    with inline.connect() as a, workers.connect() as b:
        assert not differences(snapshot(a, cipher), snapshot(b, cipher))
    assert worker_protector.unknown_fields == inline_protector.unknown_fields
    assert worker_protector.dropped == inline_protector.dropped
    for name in ("rel_read_inline", "rel_read_workers"):
        databases.drop(name)


def test_a_worker_failing_mid_file_raises_its_error_and_loads_nothing(
    databases: Databases, schema_template, population, privacy, monkeypatch, tmp_path: Path
):
    """A gzip file cut short fails in its worker, after batches were written: the loading
    process raises the reader's own error, and the file's transaction leaves nothing of it
    while the file beside it loads."""
    monkeypatch.setattr(read_worker, "WORKER_MIN_BYTES", 0)
    ndjson = [Path(p) for p in population if p.endswith(".ndjson")]
    whole = gzip.compress(max(ndjson, key=lambda p: p.stat().st_size).read_bytes())
    cut = tmp_path / "cut.ndjson.gz"
    cut.write_bytes(whole[: len(whole) * 3 // 4])
    beside = str(min(ndjson, key=lambda p: p.stat().st_size))
    warehouse = databases.create("rel_read_cut", template=schema_template)
    with warehouse.connect() as conn:
        with pytest.raises(EOFError):
            ingest_uris(conn, [str(cut), beside], privacy.protector())
        assert conn.execute("select uri from landing.source_files").fetchall() == [(beside,)]
        tables = conn.execute(
            "select table_name from information_schema.columns"
            " where table_schema = 'landing' and column_name = 'file_id'"
            " and table_name <> 'source_files'"
        ).fetchall()
        strays = conn.execute(
            " union all ".join(
                f"select count(*) from landing.{t} where file_id not in"
                " (select file_id from landing.source_files)"
                for (t,) in tables
            )
        ).fetchall()
        assert {n for (n,) in strays} == {0}
    databases.drop("rel_read_cut")


def test_a_landing_table_behind_the_policy_fails_only_the_files_that_fill_it(
    databases: Databases, schema_template, population, privacy, monkeypatch
):
    """A worker encodes its batches with the column types the loader looked up; a landing
    table lacking a column the policy names (a warehouse behind an edited policy) cannot be
    typed. Files without such records still load through workers, and a file with them
    fails naming the table and column, as it does when read in the loading process."""
    monkeypatch.setattr(read_worker, "WORKER_MIN_BYTES", 0)
    warehouse = databases.create("rel_read_behind", template=schema_template)
    fhir = [p for p in population if p.endswith(".ndjson")]
    crm = [p for p in population if p.endswith(".csv")]
    with warehouse.connect() as conn:
        conn.execute("alter table landing.contacts drop column email_opt_in")
        conn.commit()
        results = ingest_uris(conn, fhir, privacy.protector())
        assert all(r.reconciled and not r.skipped for r in results)
        with pytest.raises(
            MissingColumnsError, match=r"landing\.contacts has no column email_opt_in"
        ):
            ingest_uris(conn, crm, privacy.protector())
    databases.drop("rel_read_behind")


def test_a_vault_behind_the_policy_fails_the_load_naming_the_fields(
    databases: Databases, schema_template, population, privacy
):
    """Every load stages all the policy's vault fields: a vault.contacts without columns for
    one (a warehouse behind an edited policy) fails before reading, naming the table and the
    field; the next start's schema adds the columns and the load goes through."""
    warehouse = databases.create("rel_vault_behind", template=schema_template)
    crm = [p for p in population if p.endswith(".csv")]
    with warehouse.connect() as conn:
        conn.execute("drop view vault.contact_fields")
        conn.execute(
            "alter table vault.contacts drop column phone, drop column phone_key_version,"
            " drop column phone_effective_at"
        )
        conn.commit()
        with pytest.raises(MissingColumnsError, match=r"vault\.contacts .*\['phone'\]"):
            ingest_uris(conn, crm, privacy.protector())
        conn.rollback()
    warehouse.ensure_schema()
    with warehouse.connect() as conn:
        results = ingest_uris(conn, crm, privacy.protector())
        assert all(r.reconciled and r.loaded for r in results)
    databases.drop("rel_vault_behind")


def test_strict_fhir_files_are_read_in_workers_from_a_smaller_size(
    databases: Databases, schema_template, population, privacy, monkeypatch
):
    """Strict validation costs several times fast mode's reading per byte: a FHIR file too
    small for a worker in fast mode goes to one in strict mode."""
    from connectors.warehouse import loader

    fhir = [p for p in population if p.endswith(".ndjson")]
    largest = max(Path(p).stat().st_size for p in fhir)
    monkeypatch.setattr(read_worker, "WORKER_MIN_BYTES", largest + 1)
    assert read_worker.worker_min_bytes("fhir", "strict") <= largest
    assert read_worker.worker_min_bytes("hl7", "strict") == largest + 1
    in_workers: list[str] = []
    read_in_worker = loader.read_in_worker

    def spy(units, protector, file_id, source, result, *rest):
        in_workers.append(result.uri)
        return read_in_worker(units, protector, file_id, source, result, *rest)

    monkeypatch.setattr(loader, "read_in_worker", spy)
    for mode in ("fast", "strict"):
        warehouse = databases.create(f"rel_read_{mode}", template=schema_template)
        with warehouse.connect() as conn:
            results = ingest_uris(conn, fhir, privacy.protector(), fhir_mode=mode)
        assert all(r.reconciled and r.read for r in results)
        databases.drop(f"rel_read_{mode}")
        if mode == "fast":
            assert in_workers == []
    assert max(fhir, key=lambda p: Path(p).stat().st_size) in in_workers

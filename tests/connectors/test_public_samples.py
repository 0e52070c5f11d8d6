"""Every public sample under ../shared/data loads: each record loaded or quarantined with a
reason, and the counts reconcile per file."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.reasons import REASONS
from pipelines.resources import PrivacyResource
from services.ingest import ingest_uris


def _samples(shared_data: Path) -> list[Path]:
    fhir = sorted((shared_data / "fhir").rglob("*.ndjson")) + sorted(
        (shared_data / "fhir").rglob("*.json")
    )
    hl7 = sorted((shared_data / "hl7").glob("*.hl7"))
    crm = sorted((shared_data / "crm").glob("*.csv"))
    return fhir + hl7 + crm


@pytest.fixture(scope="module")
def loaded(warehouse, shared_data):
    files = _samples(shared_data)
    with warehouse.connect() as conn:
        results = ingest_uris(conn, [str(f) for f in files], PrivacyResource().protector())
    return files, results


def test_every_public_sample_file_is_accounted_for(loaded):
    files, results = loaded
    assert len(results) == len(files) > 70
    for result in results:
        assert result.read > 0, result.uri
        assert result.read == result.loaded + result.quarantined, result.uri
        assert set(result.quarantined_by_reason) <= set(REASONS)


def test_ndjson_line_counts_match_records_read(loaded, warehouse):
    files, results = loaded
    by_uri = {r.uri: r for r in results}
    for path in files:
        if path.suffix == ".ndjson":
            lines = sum(1 for line in path.read_text().splitlines() if line.strip())
            assert by_uri[str(path)].read == lines, path.name


def test_supported_types_load_and_others_are_quarantined_with_a_reason(loaded, warehouse):
    _, results = loaded
    by_name = {Path(r.uri).name: r for r in results}
    assert by_name["Patient.000.ndjson"].loaded > 0
    assert by_name["Condition.000.ndjson"].loaded > 0
    assert by_name["Organization.000.ndjson"].quarantined_by_reason == {
        "FHIR_UNSUPPORTED_TYPE": by_name["Organization.000.ndjson"].read
    }
    assert by_name["ADT-A01-01.hl7"].loaded == 1
    assert by_name["ORU-R01-01.hl7"].loaded == 1
    assert by_name["VXU-V04-01.hl7"].loaded == 1
    assert by_name["SIU-S12-01.hl7"].loaded == 1
    assert by_name["leads-100.csv"].loaded + by_name["leads-100.csv"].quarantined == 100
    with warehouse.connect() as conn:
        stored = conn.execute(
            "select count(*) from quarantine.records q join landing.source_files f"
            " using (file_id) where f.uri like %s",
            ("%Organization.000.ndjson",),
        ).fetchone()[0]
    assert stored == by_name["Organization.000.ndjson"].quarantined

"""Quarantine listing shows no PHI; replay loads records that now pass and keeps counts true."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.warehouse.loader import load_file
from domain.records import Rejection
from pipelines.resources import PrivacyResource
from services.quarantine import list_quarantine, replay

CANARY = "Quirinalda"
GOOD_PATIENT = {
    "resourceType": "Patient",
    "id": "replay-patient-1",
    "name": [{"family": CANARY, "given": ["Ottilie"]}],
    "birthDate": "1950-02-03",
    "gender": "female",
}


def test_replay_after_a_fix_loads_the_record_and_listing_holds_no_phi(warehouse, tmp_path):
    protector = PrivacyResource().protector()
    uri = tmp_path / "rejected-by-an-older-connector.ndjson"
    uri.write_text("two lines\n")
    good = json.dumps(GOOD_PATIENT).encode()
    with warehouse.connect() as conn:
        original = load_file(
            conn,
            uri=str(uri),
            source="fhir",
            units=[
                Rejection("line 1", "FHIR_INVALID", "line 1: Patient.name invalid", good),
                Rejection("line 2", "NOT_JSON", "line 2: not valid JSON", b"{" + CANARY.encode()),
            ],
            protector=protector,
        )
        listed = list_quarantine(conn, source="fhir", limit=10_000)
        mine = [r for r in listed if r.file == Path(uri).name]
        assert [r.reason for r in mine] == ["FHIR_INVALID", "NOT_JSON"]
        assert CANARY not in json.dumps([r.as_dict() for r in listed])

        outcomes = replay(conn, protector, [r.quarantine_id for r in mine])
        assert [(o.loaded, o.reason) for o in outcomes] == [(True, None), (False, "NOT_JSON")]
        assert (
            conn.execute(
                "select count(*) from landing.patients where subject_token = %s",
                (protector.tokenizer.subject_token("fhir", "replay-patient-1"),),
            ).fetchone()[0]
            == 1
        )
        # The original file's counts stay as loaded; the replay is its own one-record file.
        read, loaded, quarantined = conn.execute(
            "select records_read, records_loaded, records_quarantined from landing.source_files"
            " where file_id = %s",
            (original.file_id,),
        ).fetchone()
        assert (read, loaded, quarantined) == (2, 0, 2)
        remaining = [r for r in list_quarantine(conn, limit=10_000) if r.file == Path(uri).name]
        assert [r.reason for r in remaining] == ["NOT_JSON"]

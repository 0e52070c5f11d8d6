"""services.ingest.ingest_uris keeps several files in flight (the next ones are read while the
one before them commits); the outcome must be the one of loading them one after the other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import services.ingest
from connectors.warehouse.loader import redact_uri
from pipelines.resources import PrivacyResource
from services.ingest import UnknownSourceError, ingest_uris

UPDATED = "2026-03-01T10:00:00Z"


@pytest.fixture(
    params=[(2, 4), (3, 3), (2, 2)],
    ids=["2-read-4-in-flight", "3-read-3-in-flight", "2-read-2-in-flight"],
    autouse=True,
)
def lanes(request, monkeypatch) -> int:
    """Files read side by side and files in flight (the default here, and others): the
    order must hold for any numbers."""
    read, in_flight = request.param
    monkeypatch.setattr(services.ingest, "LANES", read)
    monkeypatch.setattr(services.ingest, "FILES_IN_FLIGHT", in_flight)
    return read * 10 + in_flight  # distinct per case: it names the test's records


RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"


def _patient(pid: str, gender: str, given: str, race_text: str = "White") -> str:
    return json.dumps(
        {
            "resourceType": "Patient",
            "id": pid,
            "meta": {"lastUpdated": UPDATED},
            "extension": [{"url": RACE, "extension": [{"url": "text", "valueString": race_text}]}],
            "gender": gender,
            "name": [{"family": "Sidebyside", "given": [given]}],
            "birthDate": "1970-05-06",
        }
    )


def _stored(conn, protector, patient_id: str) -> tuple[str, int, str]:
    """(landing sex, landing file_id, vault given name) of a patient: which file won."""
    subject = protector.tokenizer.subject_token("fhir", patient_id)
    sex, file_id = conn.execute(
        "select sex, file_id from landing.patients where subject_token = %s", (subject,)
    ).fetchone()
    key_version, blob = conn.execute(
        "select key_version, ciphertext from vault.contact_fields"
        " where subject_token = %s and column_name = 'given_name'",
        (subject,),
    ).fetchone()
    return sex, file_id, protector.cipher.decrypt(subject, "given_name", key_version, blob)


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_the_later_file_wins_a_tie_although_it_loads_beside_the_earlier(warehouse, tmp_path, lanes):
    """The first file is large and the second tiny: unordered, the tiny one would merge and
    commit first and the first file's row would win the tie on effective time."""
    protector = PrivacyResource().protector()
    first = _write(
        tmp_path / "first.ndjson",
        [_patient(f"sbs-fill-{lanes}-{i}", "female", "Filler") for i in range(3000)]
        + [_patient(f"sbs-tie-{lanes}", "female", "Earlier")],
    )
    second = _write(tmp_path / "second.ndjson", [_patient(f"sbs-tie-{lanes}", "male", "Later")])
    with warehouse.connect() as conn:
        results = ingest_uris(conn, [first, second], protector, "fhir")
        assert [(r.uri, r.read, r.loaded) for r in results] == [
            (redact_uri(first), 3001, 3001),
            (redact_uri(second), 1, 1),
        ]
        assert _stored(conn, protector, f"sbs-tie-{lanes}") == (
            "male",
            results[1].file_id,
            "Later",
        )


def test_a_file_listed_twice_loads_once(warehouse, tmp_path, lanes):
    protector = PrivacyResource().protector()
    uri = _write(tmp_path / "twice.ndjson", [_patient(f"sbs-twice-{lanes}", "female", "Once")])
    with warehouse.connect() as conn:
        first, second, third = ingest_uris(conn, [uri, uri, uri], protector, "fhir")
    assert not first.skipped and second.skipped and third.skipped
    assert first.file_id == second.file_id == third.file_id
    assert (second.read, second.loaded) == (1, 1)


def test_counters_of_both_lanes_reach_the_callers_protector(warehouse, tmp_path, lanes):
    protector = PrivacyResource().protector()
    # A kept free-text value holding an e-mail address is nulled and counted, once per file.
    leaky = "ask lane@example.org"
    uris = [
        _write(
            tmp_path / f"lane-{i}.ndjson",
            [_patient(f"sbs-lane-{lanes}-{i}", "other", "Lane", leaky)],
        )
        for i in range(3)
    ]
    with warehouse.connect() as conn:
        ingest_uris(conn, uris, protector, "fhir")
    assert protector.dropped == {("patient", "race", "dlp:email"): 3}


def test_files_read_ahead_of_a_long_one_still_merge_after_it(warehouse, tmp_path, lanes):
    """The second and third files are read while the first still is, and wait for it to
    merge: the last file given wins the tie, in landing and in the vault."""
    protector = PrivacyResource().protector()
    tie = f"sbs-ahead-{lanes}"
    first = _write(
        tmp_path / "first.ndjson",
        [_patient(f"sbs-ahead-fill-{lanes}-{i}", "female", "Filler") for i in range(3000)]
        + [_patient(tie, "female", "First")],
    )
    second = _write(tmp_path / "second.ndjson", [_patient(tie, "other", "Second")])
    third = _write(tmp_path / "third.ndjson", [_patient(tie, "male", "Third")])
    with warehouse.connect() as conn:
        results = ingest_uris(conn, [first, second, third], protector, "fhir")
        assert [r.file_id for r in results] == sorted(r.file_id for r in results)
        assert _stored(conn, protector, tie) == ("male", results[2].file_id, "Third")


def test_an_error_in_one_file_is_raised_after_the_files_beside_it_end(warehouse, tmp_path, lanes):
    """The files given before the failing one are being read when it fails (they are long,
    it fails at once): they load and commit; the file after it never starts."""
    protector = PrivacyResource().protector()
    read_side_by_side = lanes // 10
    beside = [
        _write(
            tmp_path / f"good-{n}.ndjson",
            [_patient(f"sbs-good-{lanes}-{n}-{i}", "female", "Good") for i in range(3000)],
        )
        for n in range(read_side_by_side - 1)
    ]
    missing = str(tmp_path / "missing.ndjson")
    after = _write(tmp_path / "after.ndjson", [_patient(f"sbs-after-{lanes}", "female", "After")])
    uris = [*beside, missing, after]
    with warehouse.connect() as conn:
        with pytest.raises(FileNotFoundError):
            ingest_uris(conn, uris, protector, "fhir")
        loaded = {
            uri
            for (uri,) in conn.execute(
                "select uri from landing.source_files where uri = any(%s)",
                ([redact_uri(u) for u in uris],),
            )
        }
    assert loaded == {redact_uri(u) for u in beside}


def test_a_file_of_unknown_kind_fails_the_call_before_any_file_loads(warehouse, tmp_path, lanes):
    protector = PrivacyResource().protector()
    good = _write(tmp_path / "good.ndjson", [_patient(f"sbs-kind-{lanes}", "female", "Good")])
    odd = _write(tmp_path / "odd.data", [_patient(f"sbs-kind-odd-{lanes}", "female", "Odd")])
    with warehouse.connect() as conn:
        with pytest.raises(UnknownSourceError, match=r"odd\.data"):
            ingest_uris(conn, [good, odd, good], protector)
        (count,) = conn.execute(
            "select count(*) from landing.source_files where uri = %s", (redact_uri(good),)
        ).fetchone()
    assert count == 0

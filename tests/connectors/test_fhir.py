"""FHIR connector: every record accounted for, extraction, Bundles, quarantine codes, no PHI."""

from __future__ import annotations

import copy
import gzip
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.fhir import read_fhir, read_fhir_stream
from connectors.fhir.strict import StrictValidator
from domain.records import Rejection, SourceRecord

CANARY = "Zzcanaryname"
SUPPORTED = {
    "Patient",
    "Condition",
    "Encounter",
    "Observation",
    "MedicationRequest",
    "Immunization",
    "Procedure",
    "Appointment",
    "Consent",
}
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


@pytest.fixture(scope="module")
def fhir_dir(shared_data: Path) -> Path:
    return shared_data / "fhir"


@pytest.fixture(scope="module")
def bulk(fhir_dir: Path) -> Path:
    return fhir_dir / "bulk-ndjson-10-patients"


def first_resource(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return orjson.loads(f.readline())


def write_lines(path: Path, lines: list[str | bytes | dict[str, Any]]) -> str:
    with path.open("wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = orjson.dumps(line)
            f.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return str(path)


def rejections(items: list[SourceRecord | Rejection]) -> list[Rejection]:
    return [i for i in items if isinstance(i, Rejection)]


def assert_no_canary(items: list[SourceRecord | Rejection]) -> None:
    for r in rejections(items):
        assert CANARY.lower() not in r.message.lower(), r.message


# --- every shared sample: one item per record ------------------------------------------------


def test_every_sample_line_yields_exactly_one_item(fhir_dir: Path) -> None:
    files = sorted(fhir_dir.rglob("*.ndjson"))
    assert len(files) >= 15
    for path in files:
        raw = path.read_bytes().splitlines()
        lines = [n for n, line in enumerate(raw, 1) if line.strip()]
        items = list(read_fhir(str(path)))
        assert [i.position for i in items] == [f"line {n}" for n in lines], path.name
        types = {orjson.loads(raw[n - 1]).get("resourceType") for n in lines}
        if path.name == "log.ndjson":  # the bulk-export log: JSON, but not FHIR
            assert {i.reason for i in rejections(items)} == {"FHIR_NOT_A_RESOURCE"}
            assert len(rejections(items)) == len(items)
        elif types <= SUPPORTED:
            assert rejections(items) == [], (path.name, rejections(items)[:1])
        else:  # Organization, Practitioner, Device, Location, DocumentReference...
            assert all(r.reason == "FHIR_UNSUPPORTED_TYPE" for r in items), path.name


def test_official_consent_example_is_quarantined_for_its_missing_purpose(fhir_dir: Path) -> None:
    items = list(read_fhir(str(fhir_dir / "consent" / "consent-example-smartonfhir.json")))
    assert len(items) == 1
    (item,) = items
    assert isinstance(item, Rejection)
    assert item.reason == "BAD_VALUE"
    assert item.position == "file"
    assert "provision.purpose" in item.message
    assert item.entity == "consent"
    assert b"consent-example-smartonfhir" in item.payload


def test_official_consent_example_loads_once_it_has_a_purpose(
    fhir_dir: Path, tmp_path: Path
) -> None:
    example = json.loads((fhir_dir / "consent" / "consent-example-smartonfhir.json").read_text())
    example["provision"]["purpose"] = [{"system": ACT_REASON, "code": "TREAT"}]
    path = tmp_path / "consent.json"
    path.write_text(json.dumps(example, indent=2))
    (item,) = read_fhir(str(path))
    assert isinstance(item, SourceRecord), item
    f = item.fields
    assert (f["subject_id"], f["purpose"], f["status"]) == ("xcda", "treatment", "active")
    # No top-level type: the policyRule OPTIN baseline decides.
    assert f["decision"] == "permit"
    assert f["period_start"] == date(2016, 6, 23)
    assert f["recorded_at"] == datetime(2016, 6, 23, 7, 2, 33, tzinfo=UTC)


# --- extraction ------------------------------------------------------------------------------


def test_synthea_patient_fields(bulk: Path) -> None:
    item = next(read_fhir(str(bulk / "Patient.000.ndjson")))
    assert isinstance(item, SourceRecord)
    assert item.entity == "patient" and item.position == "line 1"
    f = item.fields
    pid = "129c6ac7-8d06-89de-ad63-0204a93e76c3"
    assert f["subject_system"] == "fhir"
    assert f["subject_id"] == f["source_id"] == pid
    assert f["mrn"] == pid
    assert f["mrn_authority"] == "http://hospital.smarthealthit.org"
    assert f["ssn"] == "999-94-5397"
    assert f["drivers_license"] == "S99940903"
    assert (f["given_name"], f["family_name"]) == ("Sumiko254", "Medhurst46")  # official
    assert f["birth_date"] == date(1927, 5, 21)
    assert f["sex"] == "female" and f["birth_sex"] == "female"
    assert (f["race"], f["ethnicity"]) == ("White", "Not Hispanic or Latino")
    assert f["phone"] == "555-810-7203" and f["email"] is None
    assert (f["city"], f["state"], f["postal_code"], f["country"]) == (
        "Emporia",
        "KS",
        "66801",
        "US",
    )
    assert f["address_line"] == "633 Abernathy Landing"
    assert f["language"] == "en-US"
    assert f["deceased"] is True
    assert f["effective_at"] is None  # no meta.lastUpdated in this export


def test_synthea_clinical_fields(bulk: Path) -> None:
    cond = next(read_fhir(str(bulk / "Condition.000.ndjson")))
    assert isinstance(cond, SourceRecord) and cond.entity == "condition"
    assert cond.fields["subject_id"] == "129c6ac7-8d06-89de-ad63-0204a93e76c3"
    assert (cond.fields["code_system"], cond.fields["code"]) == ("snomed", "91302008")
    assert cond.fields["clinical_status"] == "active"
    # 1976-01-19T22:58:16-05:00: the local calendar date, not the UTC one.
    assert cond.fields["onset_date"] == date(1976, 1, 19)

    enc = next(read_fhir(str(bulk / "Encounter.000.ndjson")))
    assert isinstance(enc, SourceRecord)
    assert enc.fields["class_code"] == "AMB" and enc.fields["type_system"].endswith("sct")
    assert enc.fields["start_at"] == datetime(1989, 10, 4, 6, 25, 16, tzinfo=UTC)

    imm = next(read_fhir(str(bulk / "Immunization.000.ndjson")))
    assert isinstance(imm, SourceRecord)
    assert imm.fields["subject_id"] == "fb7c882a-f897-e7c5-67e0-825e7fd55d15"  # via `patient`
    assert (imm.fields["code_system"], imm.fields["code"]) == ("cvx", "62")

    proc = next(read_fhir(str(bulk / "Procedure.000.ndjson")))
    assert isinstance(proc, SourceRecord)
    assert proc.fields["performed_date"] == date(2022, 6, 22)  # performedPeriod.start

    med = next(read_fhir(str(bulk / "MedicationRequest.000.ndjson")))
    assert isinstance(med, SourceRecord)
    assert med.fields["code_system"] == "rxnorm" and med.fields["authored_on"] == date(1989, 5, 27)


def test_fhiry_patients_all_load(fhir_dir: Path) -> None:
    items = list(read_fhir(str(fhir_dir / "Patient-fhiry-25.ndjson")))
    assert len(items) == 25
    # This export types identifiers with the pre-R4 URL http://hl7.org/fhir/v2/0203.
    assert all(isinstance(i, SourceRecord) and i.fields["mrn"] for i in items)
    assert any(i.fields["drivers_license"] for i in items)


def test_partial_dates_and_offsets(tmp_path: Path) -> None:
    lines: list[str | bytes | dict[str, Any]] = [
        {"resourceType": "Patient", "id": "a", "birthDate": "1970"},
        {
            "resourceType": "Patient",
            "id": "b",
            "birthDate": "1970-05",
            "meta": {"lastUpdated": "2024-05-01T10:00:00.123+02:00"},
        },
        {
            "resourceType": "Encounter",
            "id": "e",
            "subject": {"reference": "Patient/a"},
            "period": {"start": "2020-01-01T10:00:00+02:00", "end": "2020-02"},
        },
    ]
    a, b, e = read_fhir(write_lines(tmp_path / "p.ndjson", lines))
    assert isinstance(a, SourceRecord) and a.fields["birth_date"] == date(1970, 1, 1)
    assert isinstance(b, SourceRecord) and b.fields["birth_date"] == date(1970, 5, 1)
    assert b.fields["effective_at"] == datetime(2024, 5, 1, 8, 0, 0, 123000, tzinfo=UTC)
    assert isinstance(e, SourceRecord)
    assert e.fields["start_at"] == datetime(2020, 1, 1, 8, tzinfo=UTC)
    assert e.fields["end_at"] == datetime(2020, 2, 1, tzinfo=UTC)


def test_r4_marketing_consent_and_appointment(tmp_path: Path) -> None:
    consent = {
        "resourceType": "Consent",
        "id": "c1",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "dateTime": "2024-01-02T03:04:05Z",
        "provision": {
            "type": "deny",
            "period": {"start": "2024-01-02", "end": "2025-01-02"},
            "purpose": [{"system": ACT_REASON, "code": "HMARKT"}],
        },
    }
    appointment = {
        "resourceType": "Appointment",
        "id": "s1",
        "status": "booked",
        "serviceType": [{"coding": [{"code": "wellness"}]}],
        "start": "2024-03-01T09:00:00Z",
        "end": "2024-03-01T09:30:00Z",
        "participant": [
            {"actor": {"reference": "Practitioner/x"}},
            {"actor": {"reference": "Patient/p1"}},
        ],
    }
    c, a = read_fhir(write_lines(tmp_path / "c.ndjson", [consent, appointment]))
    assert isinstance(c, SourceRecord) and isinstance(a, SourceRecord)
    assert (c.fields["purpose"], c.fields["decision"]) == ("marketing", "deny")
    assert (c.fields["period_start"], c.fields["period_end"]) == (
        date(2024, 1, 2),
        date(2025, 1, 2),
    )
    assert (a.fields["subject_id"], a.fields["service_code"]) == ("p1", "wellness")


# --- Bundles ---------------------------------------------------------------------------------


def make_bundle(bulk: Path, bundle_type: str = "transaction") -> dict[str, Any]:
    patient = first_resource(bulk / "Patient.000.ndjson")
    condition = first_resource(bulk / "Condition.000.ndjson")
    encounter = first_resource(bulk / "Encounter.000.ndjson")
    organization = first_resource(bulk / "Organization.000.ndjson")
    idless = copy.deepcopy(patient)
    del idless["id"]
    condition2 = copy.deepcopy(condition)
    encounter2 = copy.deepcopy(encounter)
    orphan = copy.deepcopy(condition)
    wrong_target = copy.deepcopy(condition)
    condition["subject"] = {"reference": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001"}
    encounter["subject"] = {"reference": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001"}
    condition2["subject"] = {"reference": "urn:uuid:bbbbbbbb-0000-0000-0000-000000000002"}
    encounter2["subject"] = {"reference": "https://ehr.example/fhir/Patient/abs-1"}
    orphan["subject"] = {"reference": "urn:uuid:cccccccc-0000-0000-0000-000000000404"}
    wrong_target["subject"] = {"reference": "urn:uuid:dddddddd-0000-0000-0000-000000000003"}
    resources = [
        ("urn:uuid:aaaaaaaa-0000-0000-0000-000000000001", patient),
        ("urn:uuid:bbbbbbbb-0000-0000-0000-000000000002", idless),
        ("urn:uuid:dddddddd-0000-0000-0000-000000000003", organization),
        (None, condition),
        (None, encounter),
        (None, condition2),
        (None, encounter2),
        (None, orphan),
        (None, wrong_target),
    ]
    entries: list[dict[str, Any]] = []
    for full_url, res in resources:
        entry: dict[str, Any] = {"resource": res, "request": {"method": "POST", "url": "x"}}
        if full_url:
            entry["fullUrl"] = full_url
        entries.append(entry)
    entries.append({"request": {"method": "DELETE", "url": "Patient/gone"}})  # no resource
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


@pytest.mark.parametrize("bundle_type", ["transaction", "collection", "searchset", "batch"])
def test_bundle_resolves_urn_uuid_references(bulk: Path, tmp_path: Path, bundle_type: str) -> None:
    bundle = make_bundle(bulk, bundle_type)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle, indent=2))  # pretty-printed: a document, not NDJSON
    items = list(read_fhir(str(path)))
    assert [i.position for i in items] == [f"entry {n}" for n in range(1, 11)]
    pid = "129c6ac7-8d06-89de-ad63-0204a93e76c3"
    patient, idless, org, cond, enc, cond2, enc2, orphan, wrong, delete = items
    assert isinstance(patient, SourceRecord) and patient.fields["subject_id"] == pid
    assert isinstance(idless, SourceRecord)
    assert idless.fields["subject_id"] == "bbbbbbbb-0000-0000-0000-000000000002"
    assert isinstance(org, Rejection) and org.reason == "FHIR_UNSUPPORTED_TYPE"
    assert isinstance(cond, SourceRecord) and cond.fields["subject_id"] == pid
    assert isinstance(enc, SourceRecord) and enc.fields["subject_id"] == pid
    assert isinstance(cond2, SourceRecord)
    assert cond2.fields["subject_id"] == "bbbbbbbb-0000-0000-0000-000000000002"
    assert isinstance(enc2, SourceRecord) and enc2.fields["subject_id"] == "abs-1"
    assert isinstance(orphan, Rejection) and orphan.reason == "FHIR_BAD_REFERENCE"
    assert isinstance(wrong, Rejection) and wrong.reason == "FHIR_BAD_REFERENCE"
    assert isinstance(delete, Rejection) and delete.reason == "MISSING_FIELD"
    assert orjson.loads(orphan.payload)["resourceType"] == "Condition"


def test_bundle_on_an_ndjson_line(bulk: Path, tmp_path: Path) -> None:
    patient = first_resource(bulk / "Patient.000.ndjson")
    bundle = make_bundle(bulk)
    items = list(read_fhir(write_lines(tmp_path / "mixed.ndjson", [patient, bundle, patient])))
    positions = [i.position for i in items]
    assert positions[0] == "line 1" and positions[-1] == "line 3"
    assert positions[1:-1] == [f"line 2 entry {n}" for n in range(1, 11)]


# --- quarantine ------------------------------------------------------------------------------


def test_bad_inputs_get_the_right_codes(tmp_path: Path) -> None:
    stu3_consent = {  # the synthetic generator's STU3 shape
        "resourceType": "Consent",
        "id": "stu3",
        "status": "active",
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": f"Patient/{CANARY}",
        "period": {"start": "2020-01-01"},
        "consentingParty": [{"reference": f"Patient/{CANARY}"}],
        "policyRule": "http://hl7.org/fhir/ConsentPolicy/opt-in",
        "purpose": [{"system": "http://hl7.org/fhir/v3/ActReason", "code": "HMARKT"}],
    }
    stu3_profile = {
        "resourceType": "Condition",
        "id": CANARY,
        "meta": {"profile": ["http://hl7.org/fhir/STU3/StructureDefinition/Condition"]},
        "subject": {"reference": "Patient/x"},
        "code": {"coding": [{"code": "1"}]},
    }
    r5_consent = {
        "resourceType": "Consent",
        "id": "r5",
        "status": "active",
        "subject": {"reference": "Patient/x"},
        "decision": "permit",
    }
    cases: list[tuple[str | bytes | dict[str, Any], str]] = [
        ('{"resourceType": "Patient", "id": "' + CANARY, "NOT_JSON"),
        (f"<Patient><name value='{CANARY}'/></Patient>", "NOT_JSON"),
        (b'{"resourceType":"Patient","id":"\xff' + CANARY.encode() + b'"}', "BAD_ENCODING"),
        ({"id": CANARY, "name": CANARY}, "FHIR_NOT_A_RESOURCE"),
        ([CANARY], "FHIR_NOT_A_RESOURCE"),  # type: ignore[list-item]
        (stu3_consent, "FHIR_WRONG_VERSION"),
        (stu3_profile, "FHIR_WRONG_VERSION"),
        (r5_consent, "FHIR_WRONG_VERSION"),
        (
            {
                "resourceType": "Patient",
                "id": "p",
                "birthDate": "1980-13-45",
                "name": [{"family": CANARY}],
            },
            "BAD_DATE",
        ),
        ({"resourceType": "Patient", "id": "p", "birthDate": "12/31/1969"}, "BAD_DATE"),
        (
            {
                "resourceType": "Encounter",
                "id": "e",
                "subject": {"reference": "Patient/p"},
                "period": {"start": f"{CANARY}"},
            },
            "BAD_DATE",
        ),
        (
            {"resourceType": "Condition", "id": "c", "code": {"coding": [{"code": "1"}]}},
            "FHIR_BAD_REFERENCE",
        ),
        (
            {
                "resourceType": "Condition",
                "id": "c",
                "subject": {"reference": f"Group/{CANARY}"},
                "code": {"coding": [{"code": "1"}]},
            },
            "FHIR_BAD_REFERENCE",
        ),
        (
            {"resourceType": "Procedure", "id": "c", "subject": {"reference": "Patient/p"}},
            "MISSING_FIELD",
        ),
        (
            {
                "resourceType": "Condition",
                "subject": {"reference": "Patient/p"},
                "code": {"coding": [{"code": "1"}]},
            },
            "MISSING_FIELD",
        ),  # no id
        ({"resourceType": "Patient", "id": "p", "gender": CANARY}, "BAD_VALUE"),
        (
            {
                "resourceType": "Condition",
                "id": "c",
                "subject": {"reference": "Patient/p"},
                "code": {"coding": CANARY},
            },
            "FHIR_INVALID",
        ),
        ({"resourceType": "Organization", "id": "o", "name": CANARY}, "FHIR_UNSUPPORTED_TYPE"),
        ({"resourceType": CANARY, "id": "o"}, "FHIR_UNSUPPORTED_TYPE"),
    ]
    lines: list[str | bytes | dict[str, Any]] = []
    for line, _ in cases:
        lines.append(orjson.dumps(line) if isinstance(line, list) else line)
        lines.append("   ")  # blank lines are not records
    path = write_lines(tmp_path / "bad.ndjson", lines)
    for mode in ("fast", "strict"):
        items = list(read_fhir(path, mode=mode))  # type: ignore[arg-type]
        assert [(i.position, getattr(i, "reason", None)) for i in items] == [
            (f"line {2 * n + 1}", code) for n, (_, code) in enumerate(cases)
        ], mode
        assert_no_canary(items)
        raw = Path(path).read_bytes().splitlines()
        for item, line in zip(items, raw[::2], strict=True):
            assert isinstance(item, Rejection) and item.payload == line
    assert "(unknown resourceType)" in items[-1].message


def test_strict_mode_rejects_what_fast_mode_lets_through(tmp_path: Path) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "active": CANARY,  # a boolean element holding a string
        "nickname": CANARY,  # not an R4 Patient element
        "name": [{"family": CANARY, "given": [CANARY]}],
        "telecom": [{"system": "email", "value": f"{CANARY}@example.org"}],
        "birthDate": "1980-01-01",
    }
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "subject": {"reference": "Patient/p1"},
        "class": {"code": "AMB"},
        "hospitalization": CANARY,
    }  # an object element holding a string
    path = write_lines(tmp_path / "p.ndjson", [patient, encounter])
    fast = list(read_fhir(path))
    assert all(isinstance(i, SourceRecord) for i in fast)
    strict = list(read_fhir(path, mode="strict"))
    assert [getattr(i, "reason", None) for i in strict] == ["FHIR_INVALID", "FHIR_INVALID"]
    assert "active" in strict[0].message and "(unknown element)" in strict[0].message
    assert "hospitalization" in strict[1].message
    assert_no_canary(strict)


def test_empty_and_blank_files(tmp_path: Path) -> None:
    (tmp_path / "empty.ndjson").write_bytes(b"")
    (tmp_path / "blank.ndjson").write_bytes(b"\n  \n\r\n")
    assert list(read_fhir(str(tmp_path / "empty.ndjson"))) == []
    assert list(read_fhir(str(tmp_path / "blank.ndjson"))) == []


def test_one_line_files(bulk: Path, tmp_path: Path) -> None:
    patient = first_resource(bulk / "Patient.000.ndjson")
    (item,) = read_fhir(write_lines(tmp_path / "one.ndjson", [patient]))
    assert item.position == "line 1"
    items = list(read_fhir(write_lines(tmp_path / "b.json", [make_bundle(bulk), "  "])))
    assert [i.position for i in items] == [f"entry {n}" for n in range(1, 11)]


def test_garbage_file_is_one_rejection(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(f"name,dob\n{CANARY},1980-01-01\n")
    (item,) = read_fhir(str(tmp_path / "x.json"))
    assert isinstance(item, Rejection) and item.reason == "NOT_JSON" and item.position == "file"
    assert CANARY not in item.message


def test_gzip_file_reads_like_the_plain_one(bulk: Path, tmp_path: Path) -> None:
    plain = bulk / "Condition.000.ndjson"
    gz = tmp_path / "Condition.000.ndjson.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(read_fhir(str(gz))) == list(read_fhir(str(plain)))
    assert next(read_fhir(f"file://{gz}")).position == "line 1"


def test_rejects_unknown_mode(bulk: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        list(read_fhir(str(bulk / "Patient.000.ndjson"), mode="lenient"))  # type: ignore[arg-type]


# --- fuzz ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.just(CANARY)
    | st.sampled_from(["1980-13-45", "2020", "2020-01-01T10:00:00Z", "Patient/1", "urn:uuid:x"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
SAMPLES = {
    "Patient": "Patient.000.ndjson",
    "Condition": "Condition.000.ndjson",
    "Encounter": "Encounter.000.ndjson",
    "Immunization": "Immunization.000.ndjson",
    "MedicationRequest": "MedicationRequest.000.ndjson",
    "Procedure": "Procedure.000.ndjson",
}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), rtype=st.sampled_from([*SAMPLES, "Consent", "Appointment", "Observation"]))
def test_mangled_resources_never_crash(bulk: Path, data: st.DataObject, rtype: str) -> None:
    if rtype in SAMPLES:
        resource = first_resource(bulk / SAMPLES[rtype])
    else:
        resource = {
            "resourceType": rtype,
            "id": "x",
            "status": "active",
            "subject": {"reference": "Patient/p"},
            "patient": {"reference": "Patient/p"},
        }
    # Replace (or add) a few elements, nested ones included, with arbitrary JSON.
    for _ in range(data.draw(st.integers(1, 3))):
        keys = [k for k in resource if k != "resourceType"] + ["code", "period", "name"]
        key = data.draw(st.sampled_from(keys))
        target = resource
        if isinstance(resource.get(key), dict) and resource[key] and data.draw(st.booleans()):
            target = resource[key]
            key = data.draw(st.sampled_from(sorted(target)))
        target[key] = data.draw(json_values)
    line = orjson.dumps(resource)
    for validator in (None, StrictValidator()):
        items = list(read_fhir_stream(io.BytesIO(line + b"\n"), validator))
        assert [i.position for i in items] == ["line 1"]
        assert_no_canary(items)

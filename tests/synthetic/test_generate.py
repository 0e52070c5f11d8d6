"""Tests for the synthetic data generator: determinism, validity, overlaps, bad-record counts."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from synthetic import names
from synthetic.__main__ import main
from synthetic.bad import KINDS
from synthetic.crm import HEADER
from synthetic.fhir import RESOURCE_TYPES
from synthetic.generate import MANIFEST, GenerationSummary, generate

AS_OF = date(2025, 3, 15)
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
RESTRICTED = set(names.RESTRICTED_ZIP3)


# Helpers ------------------------------------------------------------------------------------


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def fhir_lines(root: Path, rtype: str) -> list[bytes]:
    return (root / f"fhir/{rtype}.000.ndjson").read_bytes().splitlines()


def fhir_resources(root: Path, rtype: str) -> list[dict[str, Any]]:
    """The well-formed resources of one file (bad lines skipped)."""
    out = []
    for line in fhir_lines(root, rtype):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if obj.get("resourceType") == rtype and "consentingParty" not in obj:
            out.append(obj)
    return out


def split_hl7(text: str) -> list[str]:
    """Split concatenated HL7: a message starts at each MSH (segments before the first MSH
    form one headerless message)."""
    messages: list[list[str]] = []
    for segment in text.split("\r"):
        if not segment:
            continue
        if segment.startswith("MSH|") or not messages:
            messages.append([])
        messages[-1].append(segment)
    return ["\r".join(m) + "\r" for m in messages]


def hl7_messages(root: Path, kind: str) -> list[str]:
    text = (root / f"hl7/{kind}.hl7").read_bytes().decode("utf-8")
    assert "\n" not in text, "segments must be separated by CR only"
    return split_hl7(text)


def segments(message: str, name: str) -> list[list[str]]:
    return [s.split("|") for s in message.split("\r") if s.startswith(name + "|")]


def crm_rows(root: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (root / "crm/contacts.csv").open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def crm_row_is_bad(row: dict[str, str]) -> bool:
    if not row["contact_id"] or row["email_opt_in"] not in ("yes", "no"):
        return True
    try:
        if row["birth_date"]:
            date.fromisoformat(row["birth_date"])
    except ValueError:
        return True
    return False


def manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / MANIFEST).read_bytes())


def days_ago(iso: str) -> int:
    return (AS_OF - date.fromisoformat(iso[:10])).days


# Fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("small")
    return out, generate(out, 50, seed=7, as_of=AS_OF)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("medium")
    return out, generate(out, 3000, seed=11, as_of=AS_OF)


# Determinism --------------------------------------------------------------------------------


def test_same_seed_and_as_of_give_identical_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", 300, seed=5, as_of=AS_OF)
    generate(tmp_path / "b", 300, seed=5, as_of=AS_OF)
    a, b = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert len(a) == len(RESOURCE_TYPES) + 4 + 1 + 1
    for path in a:
        assert a[path] == b[path], path


def test_different_seeds_differ(tmp_path: Path) -> None:
    generate(tmp_path / "a", 100, seed=1, as_of=AS_OF)
    generate(tmp_path / "b", 100, seed=2, as_of=AS_OF)
    a, b = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    for path in ("fhir/Patient.000.ndjson", "hl7/adt.hl7", "crm/contacts.csv"):
        assert a[path] != b[path], path


def test_as_of_defaults_to_today_utc(tmp_path: Path) -> None:
    before = datetime.now(UTC).date()
    summary = generate(tmp_path, 3, seed=1)
    after = datetime.now(UTC).date()
    assert summary.as_of in (before, after)
    assert manifest(tmp_path)["as_of"] == summary.as_of.isoformat()


def test_rejects_zero_patients(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, 0)


# FHIR ---------------------------------------------------------------------------------------


def test_fhir_lines_validate_as_r4_except_the_bad_ones(
    small: tuple[Path, GenerationSummary],
) -> None:
    from fhir.resources.R4B import get_fhir_model_class

    root, summary = small
    files = manifest(root)["files"]
    kinds: Counter[str] = Counter()
    for rtype in RESOURCE_TYPES:
        path = f"fhir/{rtype}.000.ndjson"
        lines = fhir_lines(root, rtype)
        assert len(lines) == files[path]["records"] == summary.files[path].records
        bad = 0
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                kinds["fhir_not_json"] += 1
                bad += 1
                continue
            if "resourceType" not in obj:
                kinds["fhir_missing_resource_type"] += 1
                bad += 1
                continue
            assert obj["resourceType"] == rtype
            try:
                get_fhir_model_class(rtype).model_validate(obj)
            except ValueError:
                bad += 1
                if rtype == "Consent":
                    assert "consentingParty" in obj and isinstance(obj["patient"], str)
                    kinds["fhir_stu3_consent"] += 1
                else:
                    assert rtype == "Patient"
                    date_ok = True
                    try:
                        date.fromisoformat(obj["birthDate"])
                    except ValueError:
                        date_ok = False
                    assert not date_ok
                    kinds["fhir_bad_birth_date"] += 1
        assert bad == files[path]["bad"] == summary.files[path].bad, path
    for kind, n in kinds.items():
        assert n == summary.bad[kind] >= 1, kind


def test_fhir_shape_ids_and_references(medium: tuple[Path, GenerationSummary]) -> None:
    root, _ = medium
    patients = fhir_resources(root, "Patient")
    ids = [p["id"] for p in patients]
    assert len(ids) == len(set(ids))
    mrns = [i["value"] for p in patients for i in p["identifier"] if i["system"] == MRN_SYSTEM]
    assert len(mrns) == len(patients) == len(set(mrns))
    known = {f"Patient/{i}" for i in ids}
    for rtype in RESOURCE_TYPES[1:]:
        resources = fhir_resources(root, rtype)
        assert resources, rtype
        rids = [r["id"] for r in resources]
        assert len(rids) == len(set(rids)), rtype
        for r in resources:
            if rtype == "Appointment":
                ref = r["participant"][0]["actor"]["reference"]
            elif rtype in ("Immunization", "Consent"):
                ref = r["patient"]["reference"]
            else:
                ref = r["subject"]["reference"]
            assert ref in known, (rtype, ref)
    # US Core bits and the variety the brief asks for.
    assert all(p["extension"][0]["url"].endswith("us-core-race") for p in patients)
    assert any("deceasedBoolean" in p for p in patients)
    assert any(
        i["system"] == "http://hl7.org/fhir/sid/us-ssn" for p in patients for i in p["identifier"]
    )
    accented = [
        p
        for p in patients
        if not (p["name"][0]["family"] + "".join(p["name"][0]["given"])).isascii()
    ]
    assert accented
    zips = [p["address"][0]["postalCode"] for p in patients]
    assert all(len(z) == 5 and z.isdigit() for z in zips)
    assert any(z[:3] in RESTRICTED for z in zips)
    assert {p["communication"][0]["language"]["coding"][0]["code"] for p in patients} > {"en"}


def test_care_gap_segments_are_populated(medium: tuple[Path, GenerationSummary]) -> None:
    root, summary = medium
    n = summary.patients
    patients = {p["id"]: p for p in fhir_resources(root, "Patient")}

    def pid(ref: dict[str, str]) -> str:
        return ref["reference"].removeprefix("Patient/")

    diabetics = {
        pid(c["subject"])
        for c in fhir_resources(root, "Condition")
        if c["code"]["coding"][0]["code"] == "44054006"
    }
    assert 0.06 * n < len(diabetics) < 0.14 * n
    assert any(
        c["code"]["coding"][0]["code"] == "38341003" for c in fhir_resources(root, "Condition")
    )

    observations = fhir_resources(root, "Observation")
    last_a1c: dict[str, int] = {}
    for o in observations:
        if o["code"]["coding"][0]["code"] == "4548-4":
            assert o["valueQuantity"]["unit"] == "%"
            who, age = pid(o["subject"]), days_ago(o["effectiveDateTime"])
            last_a1c[who] = min(age, last_a1c.get(who, age))
    stale = [d for d in diabetics if last_a1c.get(d, 9999) > 183]
    assert 0.2 * len(diabetics) < len(stale) < 0.7 * len(diabetics)
    codes = {o["code"]["coding"][0]["code"] for o in observations}
    assert {"4548-4", "39156-5", "85354-9"} <= codes

    mammo = {
        pid(p["subject"])
        for p in fhir_resources(root, "Procedure")
        if p["code"]["coding"][0]["code"] in ("24623002", "71651007")
        and days_ago(p["performedDateTime"]) <= 730
    }
    women = [
        i
        for i, p in patients.items()
        if p["gender"] == "female"
        and 50 <= (AS_OF - date.fromisoformat(p["birthDate"])).days // 365.25 <= 74
    ]
    overdue = [w for w in women if w not in mammo]
    assert 0.2 * len(women) < len(overdue) < 0.7 * len(women)

    procedures = fhir_resources(root, "Procedure")
    assert sum(days_ago(p["performedDateTime"]) <= 14 for p in procedures) > 0.02 * n
    assert any(p["code"]["coding"][0]["code"] == "73761001" for p in procedures)

    season = date(AS_OF.year if AS_OF.month >= 8 else AS_OF.year - 1, 8, 1)
    flu = {
        pid(i["patient"])
        for i in fhir_resources(root, "Immunization")
        if i["vaccineCode"]["coding"][0]["code"] in ("140", "150", "158")
        and date.fromisoformat(i["occurrenceDateTime"]) >= season
    }
    assert 0.25 * n < len(flu) < 0.6 * n

    recent_visit = {
        pid(e["subject"])
        for e in fhir_resources(root, "Encounter")
        if days_ago(e["period"]["start"]) <= 548
    }
    no_visit = n - len(recent_visit)
    assert 0.05 * n < no_visit < 0.25 * n
    classes = {e["class"]["code"] for e in fhir_resources(root, "Encounter")}
    assert classes == {"AMB", "EMER", "IMP"}

    appointments = fhir_resources(root, "Appointment")
    upcoming = [
        a for a in appointments if a["status"] == "booked" and 1 <= -days_ago(a["start"]) <= 3
    ]
    no_shows = [
        a for a in appointments if a["status"] == "noshow" and 0 <= days_ago(a["start"]) <= 7
    ]
    assert len(upcoming) > 0.02 * n
    assert len(no_shows) > 0.01 * n
    assert {a["status"] for a in appointments} == {"booked", "fulfilled", "noshow", "cancelled"}

    consents = fhir_resources(root, "Consent")
    kinds = Counter(
        (c["provision"]["purpose"][0]["code"], c["provision"]["type"], c["status"])
        for c in consents
    )
    assert kinds["TREAT", "permit", "active"] > 0.7 * n
    assert kinds["HMARKT", "permit", "active"] > 0
    assert kinds["HMARKT", "permit", "inactive"] > 0
    assert kinds["HMARKT", "deny", "active"] > 0
    expired = [
        c
        for c in consents
        if c["provision"]["purpose"][0]["code"] == "HMARKT"
        and "end" in c["provision"]["period"]
        and date.fromisoformat(c["provision"]["period"]["end"]) < AS_OF
    ]
    assert expired


# HL7 ----------------------------------------------------------------------------------------


def test_hl7_messages_parse_except_the_bad_ones(small: tuple[Path, GenerationSummary]) -> None:
    from hl7apy.parser import parse_message

    root, summary = small
    files = manifest(root)["files"]
    control_ids: set[str] = set()
    missing = Counter[str]()
    for kind, expected in (
        ("adt", "ADT_A01"),
        ("oru", "ORU_R01"),
        ("siu", "SIU_S12"),
        ("vxu", "VXU_V04"),
    ):
        path = f"hl7/{kind}.hl7"
        messages = hl7_messages(root, kind)
        assert len(messages) == files[path]["records"] == summary.files[path].records
        bad = 0
        for text in messages:
            if not text.startswith("MSH|"):
                bad += 1
                missing["hl7_missing_msh"] += 1
                continue
            msg = parse_message(text, find_groups=False)
            assert msg.msh.msh_9.msh_9_3.value == expected
            assert msg.msh.msh_12.value == "2.5.1"
            ctrl = msg.msh.msh_10.value
            assert ctrl not in control_ids
            control_ids.add(ctrl)
            if "PID" not in [s.name for s in msg.children]:
                bad += 1
                missing["hl7_missing_pid"] += 1
                continue
            pid3 = msg.pid.pid_3.value
            assert pid3.endswith("^^^HUBHOSP^MR")
        assert bad == files[path]["bad"] == summary.files[path].bad, path
    assert missing["hl7_missing_msh"] == summary.bad["hl7_missing_msh"] == 4
    assert missing["hl7_missing_pid"] == summary.bad["hl7_missing_pid"] >= 1


def test_hl7_covers_the_same_people_with_conflicts(
    medium: tuple[Path, GenerationSummary],
) -> None:
    root, summary = medium
    by_mrn = {}
    for p in fhir_resources(root, "Patient"):
        mrn = next(i["value"] for i in p["identifier"] if i["system"] == MRN_SYSTEM)
        by_mrn[mrn] = p
    seen: set[str] = set()
    renamed = moved = 0
    for text in hl7_messages(root, "adt"):
        for pid in segments(text, "PID"):
            mrn = pid[3].split("^")[0]
            if mrn.startswith("9") and len(mrn) == 9:
                continue  # a made-up person in a bad record
            fhir = by_mrn[mrn]  # every HL7 patient is a FHIR patient
            seen.add(mrn)
            family = pid[5].split("^")[0]
            renamed += family != fhir["name"][0]["family"]
            zip5 = pid[11].split("^")[4]
            moved += zip5 != fhir["address"][0]["postalCode"]
            assert pid[7] == fhir["birthDate"].replace("-", "")
    assert 0.5 * summary.patients < len(seen) < 0.7 * summary.patients
    assert len(seen) == summary.hl7_patients
    assert renamed > 0 and moved > 0
    assert any(segments(m, "OBX") for m in hl7_messages(root, "oru"))
    rxa = [s for m in hl7_messages(root, "vxu") for s in segments(m, "RXA")]
    assert rxa and all(s[5].endswith("^CVX") for s in rxa)
    events = {m.split("|")[8] for m in hl7_messages(root, "siu") if m.startswith("MSH|")}
    assert "SIU^S12^SIU_S12" in events


# CRM ----------------------------------------------------------------------------------------


def test_crm_csv_header_rows_and_bad_rows(small: tuple[Path, GenerationSummary]) -> None:
    root, summary = small
    header, rows = crm_rows(root)
    assert header == list(HEADER)
    assert (root / "crm/contacts.csv").read_bytes().startswith(",".join(HEADER).encode() + b"\r\n")
    bad = [r for r in rows if crm_row_is_bad(r)]
    assert len(rows) == summary.files["crm/contacts.csv"].records
    assert (
        len(bad)
        == summary.files["crm/contacts.csv"].bad
        == manifest(root)["files"]["crm/contacts.csv"]["bad"]
    )
    assert sum(not r["contact_id"] for r in rows) == summary.bad["crm_missing_contact_id"]
    assert (
        sum(r["email_opt_in"] not in ("yes", "no") for r in rows) == summary.bad["crm_bad_opt_in"]
    )
    for r in rows:
        if crm_row_is_bad(r):
            continue
        for col in ("marketing_auth_signed", "marketing_auth_expires", "marketing_auth_revoked"):
            if r[col]:
                date.fromisoformat(r[col])
        for col in ("unsubscribed_at", "updated_at"):
            if r[col]:
                assert datetime.fromisoformat(r[col]).tzinfo is not None


def test_crm_overlaps_and_consent_mix(medium: tuple[Path, GenerationSummary]) -> None:
    root, summary = medium
    patients = fhir_resources(root, "Patient")
    mrns = {i["value"] for p in patients for i in p["identifier"] if i["system"] == MRN_SYSTEM}
    emails = {t["value"] for p in patients for t in p["telecom"] if t["system"] == "email"}
    name_dob = {
        (p["name"][0]["given"][0], p["name"][0]["family"], p["birthDate"]) for p in patients
    }
    _, rows = crm_rows(root)
    good = [r for r in rows if not crm_row_is_bad(r)]
    assert len(good) == summary.crm_contacts
    by_mrn = [r for r in good if r["mrn"]]
    assert by_mrn and all(r["mrn"] in mrns and r["mrn_authority"] == "HUBHOSP" for r in by_mrn)
    rest = [r for r in good if not r["mrn"]]
    by_email = [r for r in rest if r["email"].strip().lower() in emails]
    variants = [r for r in good if r["email"] and r["email"] != r["email"].strip().lower()]
    by_name = [
        r
        for r in rest
        if r["email"].strip().lower() not in emails
        and (r["first_name"], r["last_name"], r["birth_date"]) in name_dob
    ]
    leads = [
        r
        for r in rest
        if r["email"].strip().lower() not in emails
        and (r["first_name"], r["last_name"], r["birth_date"]) not in name_dob
    ]
    n = summary.patients
    assert 0.35 * n < len(by_mrn) < 0.55 * n
    assert by_email and variants and by_name
    assert 0.05 * n < summary.crm_leads < 0.15 * n and len(leads) >= summary.crm_leads
    assert 0.7 * n < len(good) - summary.crm_leads < 0.9 * n

    signed = [r for r in good if r["marketing_auth_signed"]]
    assert 0.5 * len(good) < len(signed) < 0.7 * len(good)
    expired = [r for r in signed if date.fromisoformat(r["marketing_auth_expires"]) < AS_OF]
    revoked = [r for r in signed if r["marketing_auth_revoked"]]
    current = [
        r
        for r in signed
        if date.fromisoformat(r["marketing_auth_expires"]) > AS_OF
        and not r["marketing_auth_revoked"]
    ]
    assert expired and revoked and current
    assert any(r["unsubscribed_at"] for r in good)
    assert Counter(r["email_opt_in"] for r in good)["yes"] > 0.7 * len(good)
    notes = [r["notes"] for r in good if r["notes"]]
    assert any("," in x for x in notes) and any('"' in x for x in notes)
    assert any("\n" in x for x in notes)


# Bad records, manifest, CLI -----------------------------------------------------------------


def test_manifest_matches_summary(small: tuple[Path, GenerationSummary]) -> None:
    root, summary = small
    m = manifest(root)
    assert m["patients"] == 50 and m["seed"] == 7 and m["as_of"] == AS_OF.isoformat()
    assert set(m["files"]) == set(summary.files)
    for path, entry in m["files"].items():
        assert entry["records"] == summary.files[path].records
        assert entry["bad"] == summary.files[path].bad
        assert entry["bytes"] == (root / path).stat().st_size
    assert {k: v["count"] for k, v in m["bad_records"].items()} == summary.bad
    assert set(summary.bad) == {k.name for k in KINDS}
    assert all(n >= 1 for n in summary.bad.values())
    assert sum(f.bad for f in summary.files.values()) == summary.total_bad
    assert m["totals"]["bad"] == summary.total_bad
    assert m["totals"]["records"] == summary.total_records


def test_bad_counts_scale_with_patients(medium: tuple[Path, GenerationSummary]) -> None:
    _, summary = medium
    for kind, n in summary.bad.items():
        assert n == (4 if kind == "hl7_missing_msh" else 3), kind


def test_one_patient_still_gets_every_bad_kind(tmp_path: Path) -> None:
    summary = generate(tmp_path, 1, seed=3, as_of=AS_OF)
    assert all(n >= 1 for n in summary.bad.values())
    patient_file = summary.files["fhir/Patient.000.ndjson"]
    assert patient_file.records == 1 + patient_file.bad  # one real patient, the rest bad


def test_pools_need_no_escaping() -> None:
    values = [
        *names.ALL_NAMES,
        *names.STREETS,
        *names.UNITS,
        *(c[0] for c in names.CITIES + names.RESTRICTED_CITIES),
    ]
    for value in values:
        assert not set(value) & set('"\\|^~&\r\n,'), value


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--patients", "5", "--seed", "2", "--out", str(tmp_path), "--as-of", "2025-01-02"])
        == 0
    )
    assert manifest(tmp_path)["as_of"] == "2025-01-02"
    assert "patients/s" in capsys.readouterr().out


def test_dates_are_relative_to_as_of(tmp_path: Path) -> None:
    """Moving as_of moves the data with it: the same people, shifted."""
    generate(tmp_path / "a", 40, seed=9, as_of=AS_OF)
    later = AS_OF + timedelta(days=100)
    generate(tmp_path / "b", 40, seed=9, as_of=later)
    births = []
    for root in (tmp_path / "a", tmp_path / "b"):
        by_id = {}
        for p in fhir_resources(root, "Patient"):
            try:
                by_id[p["id"]] = date.fromisoformat(p["birthDate"])
            except ValueError:
                continue  # the deliberately bad birthDate
        births.append(by_id)
    assert births[0].keys() == births[1].keys() and len(births[0]) >= 40
    for pid, born in births[0].items():
        assert births[1][pid] - born == timedelta(days=100)

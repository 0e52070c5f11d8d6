"""The guard of kept text (domain/protect.py): code-shaped fields hold codes only; kept free
text holds no DLP pattern nor the record's own identifiers; what is dropped is counted by
(entity, field, reason), never by value. Real values are kept unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from domain.policy import default_policy
from domain.protect import Protector
from domain.records import SourceRecord
from domain.tokens import Tokenizer
from domain.vault_cipher import VaultCipher

TOKEN_KEY, VAULT_KEY = bytes(range(32)), bytes(range(32, 64))


class _Unguarded(Protector):
    """The protector without the guard: what landing held before it (the reference)."""

    def _compile(self, entity: str) -> Any:
        plan = super()._compile(entity)
        plan.guard = None
        return plan


def _protector(cls: type[Protector] = Protector) -> Protector:
    return cls(default_policy(), Tokenizer(TOKEN_KEY), VaultCipher({1: VAULT_KEY}, 1))


def _patient(**changes: object) -> SourceRecord:
    fields: dict[str, object] = {
        "subject_system": "fhir",
        "subject_id": "p-1",
        "given_name": "Marguerite",
        "family_name": "Okonkwo-Dubois",
        "email": "marguerite@example.org",
        "phone": "(617) 555-0142",
        "address_line": "12 Harbor View Rd",
        "birth_date": date(1980, 5, 17),
        "sex": "female",
        "state": "MA",
        "country": "US",
        "language": "en-US",
        "race": "Black or African American",
        "ethnicity": "Not Hispanic or Latino",
    }
    fields.update(changes)
    return SourceRecord("patient", "line 1", fields)


def _condition(**changes: object) -> SourceRecord:
    fields: dict[str, object] = {
        "subject_system": "fhir",
        "subject_id": "p-1",
        "source_id": "c-1",
        "code_system": "snomed",
        "code": "44054006",
        "display": "Diabetes mellitus type 2 (disorder)",
        "clinical_status": "active",
    }
    fields.update(changes)
    return SourceRecord("condition", "line 1", fields)


def test_clean_values_are_kept_and_nothing_is_counted():
    protector = _protector()
    patient = protector.protect(_patient()).landing
    assert (patient["state"], patient["language"], patient["race"]) == (
        "MA",
        "en-US",
        "Black or African American",
    )
    assert protector.protect(_condition()).landing["display"].startswith("Diabetes")
    assert not protector.dropped


@pytest.mark.parametrize(
    "value", ["Jane Roe", "12 Main St", "MA\nnote", "x" * 65, "-leading", "a@b", "O'Hara"]
)
def test_a_code_field_drops_a_value_that_is_not_code_shaped(value: str):
    protector = _protector()
    assert protector.protect(_patient(state=value)).landing["state"] is None
    assert protector.dropped == {("patient", "state", "not_code"): 1}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("123-45-6789", "ssn"),
        ("617-555-0199", "phone"),
        ("1999-12-31", "date"),
        ("www.example.com", "url"),
        ("10.1.2.3", "ip_address"),
        ("MRN-00123", "mrn"),
    ],
)
def test_a_code_shaped_dlp_hit_is_dropped_with_its_kind(value: str, kind: str):
    protector = _protector()
    assert protector.protect(_condition(code=value)).landing["code"] is None
    assert protector.dropped == {("condition", "code", f"dlp:{kind}"): 1}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("call 617 555 0199 re meds", "phone"),
        ("see jdoe@example.com", "email"),
        ("seen 3/14/2021", "date"),
        ("ssn 123-45-6789", "ssn"),
        ("https://portal.example.com/p/1", "url"),
    ],
)
def test_free_text_with_a_dlp_hit_is_dropped(value: str, kind: str):
    protector = _protector()
    assert protector.protect(_condition(display=value)).landing["display"] is None
    assert protector.dropped == {("condition", "display", f"dlp:{kind}"): 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("race", "marguerite"),
        ("race", "Pt Okonkwo-Dubois, declined"),
        ("ethnicity", "OKONKWO-DUBOIS"),
        ("race", "lives at 12 harbor view rd"),
        ("language", "Marguerite"),
        ("ethnicity", "6175550142"),
    ],
)
def test_the_records_own_identifiers_are_dropped_case_and_accent_insensitively(
    field: str, value: str
):
    protector = _protector()
    assert protector.protect(_patient(**{field: value})).landing[field] is None
    assert protector.dropped == {("patient", field, "own_identifier"): 1}


def test_accents_are_folded_for_own_identifiers():
    protector = _protector()
    landing = protector.protect(_patient(given_name="Zoë", family_name="Núñez", race="NUNEZ"))
    assert landing.landing["race"] is None


def test_whole_words_only_and_standard_vocabulary_is_not_a_name():
    protector = _protector()
    # 'White' is a surname and a race category; 'Anna' is not in 'Annapolis'.
    white = protector.protect(_patient(family_name="White", race="White")).landing
    assert white["race"] == "White"
    anna = protector.protect(_patient(given_name="Anna", race="Annapolis")).landing
    assert anna["race"] == "Annapolis"
    assert not protector.dropped


def test_counts_are_per_entity_field_and_reason_and_carry_no_value():
    protector = _protector()
    for _ in range(3):
        protector.protect(_patient(state="Jane Roe", race="marguerite"))
    assert protector.dropped == {
        ("patient", "state", "not_code"): 3,
        ("patient", "race", "own_identifier"): 3,
    }
    assert "Jane" not in repr(protector.dropped) and "marguerite" not in repr(protector.dropped)


def test_a_clean_value_is_not_poisoned_by_a_dirty_one_of_the_same_row():
    protector = _protector()
    assert protector.protect(_patient(race="Asian")).landing["race"] == "Asian"
    dirty = protector.protect(_patient(race="Asian", state="Jane Roe")).landing
    assert (dirty["race"], dirty["state"]) == ("Asian", None)
    again = protector.protect(_patient(race="Asian", state="Jane Roe")).landing
    assert again["state"] is None  # a dirty row is never remembered as clean


def test_absent_and_empty_fields_stay_as_they_were():
    protector = _protector()
    record = _patient(state="")
    del record.fields["language"]
    landing = protector.protect(record).landing
    assert landing["state"] == "" and "language" not in landing
    assert not protector.dropped


def test_unit_and_system_shapes_keep_real_values():
    protector = _protector()
    obs = SourceRecord(
        "observation",
        "l",
        {
            "subject_system": "fhir",
            "subject_id": "p-1",
            "source_id": "o-1",
            "status": "final",
            "code_system": "loinc",
            "code": "39156-5",
            "display": "Body mass index (BMI) [Ratio]",
            "unit": "kg/m2",
        },
    )
    assert protector.protect(obs).landing["unit"] == "kg/m2"
    enc = SourceRecord(
        "encounter",
        "l",
        {
            "subject_system": "fhir",
            "subject_id": "p-1",
            "source_id": "e-1",
            "status": "finished",
            "class_code": "AMB",
            "type_code": "185349003",
            "type_system": "http://snomed.info/sct",
        },
    )
    assert protector.protect(enc).landing["type_system"] == "http://snomed.info/sct"
    assert protector.protect(obs).landing["unit"] == "kg/m2"
    assert not protector.dropped


# Real values: the generated population and the public samples are kept unchanged.


def _records(folder: Path) -> Iterator[SourceRecord]:
    from connectors.crm import choose_mapping, read_crm
    from connectors.fhir import read_fhir
    from connectors.hl7.reader import read_hl7

    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix in (".ndjson", ".json") and path.name != "manifest.json":
            yield from (r for r in read_fhir(str(path)) if isinstance(r, SourceRecord))
        elif path.suffix == ".hl7":
            for message in read_hl7(str(path)):
                yield from message.records
        elif path.suffix == ".csv" and "crm" in path.parts:
            items = read_crm(str(path), choose_mapping(str(path)))
            yield from (r for r in items if isinstance(r, SourceRecord))


def _assert_unchanged(records: list[SourceRecord]) -> None:
    guarded, reference = _protector(), _protector(_Unguarded)
    assert records
    for record in records:
        assert guarded.protect(record).landing == reference.protect(record).landing
    assert not guarded.dropped


def test_a_generated_population_is_kept_unchanged(tmp_path: Path):
    from synthetic.generate import generate

    generate(tmp_path, patients=300, seed=7)
    _assert_unchanged(list(_records(tmp_path)))


def test_the_public_samples_are_kept_unchanged(shared_data: Path):
    _assert_unchanged(list(_records(shared_data)))

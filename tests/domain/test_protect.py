"""The compiled protector produces exactly the rows the field policy describes."""

from __future__ import annotations

import pickle
from datetime import date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.policy import default_policy
from domain.protect import Protector
from domain.records import SourceRecord
from domain.token_chain import chained_tokenizer
from domain.tokens import Tokenizer
from domain.vault_cipher import VaultCipher

TOKEN_KEY, VAULT_KEY = bytes(range(32)), bytes(range(32, 64))


def _protector(tokenizer: Tokenizer | None = None) -> Protector:
    tokenizer = tokenizer or Tokenizer(TOKEN_KEY)
    return Protector(default_policy(), tokenizer, VaultCipher({1: VAULT_KEY}, 1))


def _patient(subject_id: str = "p-1", **changes: object) -> SourceRecord:
    fields = {
        "subject_system": "fhir",
        "subject_id": subject_id,
        "source_id": "src-1",
        "mrn": " 12 34 ",
        "mrn_authority": "urn:oid:2.16.840.1.113883.19.5",
        "given_name": "José",
        "family_name": "Núñez",
        "birth_date": date(1980, 5, 17),
        "sex": "male",
        "email": "Jose@Example.org",
        "phone": "",
        "postal_code": "02139-1234",
        "deceased": False,
        "effective_at": datetime(2024, 1, 2, 3, 4, 5),
        "a_field_nobody_declared": "x",
    }
    fields.update(changes)
    return SourceRecord("patient", "line 1", fields)


def test_a_patient_is_tokenized_vaulted_generalized_and_kept_as_the_policy_says():
    protector = _protector()
    token = Tokenizer(TOKEN_KEY).token
    protected = protector.protect(_patient())
    subject = token("subject:fhir", "p-1")
    assert protected.subject_token == subject
    assert protected.landing == {
        "subject_token": subject,
        "source_id_token": token("source_id", "src-1"),
        "birth_year": 1980,
        "birth_month": 5,
        "sex": "male",
        "has_email": True,
        "has_phone": False,
        "zip3": "021",
        "deceased": False,
        "effective_at": datetime(2024, 1, 2, 3, 4, 5),
    }
    cipher = protector.cipher
    vaulted = {c: cipher.decrypt(subject, c, v, blob) for c, v, blob in protected.vault}
    assert vaulted == {
        "given_name": "José",
        "family_name": "Núñez",
        "birth_date": "1980-05-17",
        "email": "Jose@Example.org",
        "postal_code": "02139-1234",
    }
    assert protected.identity_keys == [
        ("mrn", token("id:mrn", "HUBHOSP|1234")),
        ("email", token("id:email", "jose@example.org")),
        ("name_dob", token("id:name_dob", "nunez|jose|1980-05-17")),
    ]
    assert protector.unknown_fields == {"patient.a_field_nobody_declared": 1}


def test_repeated_subjects_and_missing_values_give_the_same_tokens_as_the_tokenizer():
    tokenizer = chained_tokenizer({1: TOKEN_KEY, 2: VAULT_KEY}, 2)
    protector = _protector(tokenizer)
    for subject_id in ("p-1", "p-2", "p-1", "p-1"):
        record = _patient(subject_id, source_id=None, email=None, birth_date=None)
        protected = protector.protect(record)
        assert protected.subject_token == tokenizer.subject_token("fhir", subject_id)
        assert protected.landing["source_id_token"] is None
        assert protected.landing["has_email"] is False
        assert protected.landing["birth_year"] is None
        assert [key for key, _ in protected.identity_keys] == ["mrn"]


def test_a_merge_tokenizes_the_prior_subject_in_the_same_system():
    protector = _protector()
    record = SourceRecord(
        "merge",
        "line 2",
        {"subject_system": "crm", "subject_id": "c-2", "prior_subject_id": "c-1"},
    )
    protected = protector.protect(record)
    token = Tokenizer(TOKEN_KEY).subject_token
    assert protected.landing == {
        "subject_token": token("crm", "c-2"),
        "prior_subject_token": token("crm", "c-1"),
    }
    assert protected.vault == [] and protected.identity_keys == []


@settings(max_examples=60, deadline=None)
@given(
    subject=st.text(min_size=1, max_size=12),
    given_name=st.text(max_size=12),
    email=st.emails() | st.just(""),
    zip_code=st.from_regex(r"[0-9]{5}", fullmatch=True),
    rotated=st.booleans(),
)
def test_a_protector_sent_to_a_read_worker_protects_as_the_original(
    subject, given_name, email, zip_code, rotated
):
    """Read workers get the protector pickled (connectors/warehouse/read_worker.py): the
    same tokens, landing values and identity keys, vault values that the original's cipher
    opens, and counters that start empty."""
    tokenizer = chained_tokenizer({1: TOKEN_KEY, 2: VAULT_KEY}, 2) if rotated else None
    original = _protector(tokenizer)
    original.protect(_patient("warm-up"))  # compiled plans and memos must not travel
    sent = pickle.loads(pickle.dumps(original, pickle.HIGHEST_PROTOCOL))
    record = _patient(subject, given_name=given_name, email=email, postal_code=zip_code)
    mine, theirs = original.protect(record), sent.protect(record)
    assert (theirs.subject_token, theirs.landing, theirs.identity_keys) == (
        mine.subject_token, mine.landing, mine.identity_keys,
    )  # fmt: skip
    opened = {
        column: original.cipher.decrypt(theirs.subject_token, column, version, blob)
        for column, version, blob in theirs.vault
    }
    assert opened == {
        column: original.cipher.decrypt(mine.subject_token, column, version, blob)
        for column, version, blob in mine.vault
    }
    assert sent.unknown_fields == {"patient.a_field_nobody_declared": 1}

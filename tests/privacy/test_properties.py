"""Property tests for the privacy rules: generalization, vault, envelope keys, tokens, DLP."""

from __future__ import annotations

import base64
import json
import string
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from domain.dlp import DlpScanner, Finding
from domain.kanon import HIERARCHIES, kanon_report
from domain.keys import (
    KeyConfigurationError,
    KeyringFileProvider,
    PassphraseMasterKey,
    wrap_context,
)
from domain.policy import default_policy
from domain.protect import Protector
from domain.records import SourceRecord
from domain.safe_harbor import (
    AGE_CAP,
    RESTRICTED_ZIP3,
    age_label,
    age_on,
    birth_year_for_analysts,
    populous_zip3s,
    safe_zip3,
)
from domain.token_chain import chained_tokenizer
from domain.vault_cipher import VaultDecryptionError

KEYS = {1: bytes(range(32)), 2: bytes(range(32, 64)), 3: bytes(range(64, 96))}
names = st.text(alphabet=string.ascii_letters + "àéîõüñçÅØ' -", min_size=2, max_size=20)
zip5s = st.from_regex(r"\A[0-9]{5}\Z")
births = st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31))
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31))
slow = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def provider(tmp_path_factory) -> KeyringFileProvider:
    return KeyringFileProvider(tmp_path_factory.mktemp("keys") / "keyring.json")


def _patient(given_name, family, birth, postal, email) -> SourceRecord:
    return SourceRecord(
        "patient",
        "line 1",
        {
            "subject_system": "fhir",
            "subject_id": "p-1",
            "given_name": given_name,
            "family_name": family,
            "birth_date": birth,
            "postal_code": postal,
            "email": email,
            "ssn": "987-65-4329",
            "mrn": "MRN0001",
        },
    )


# -- two tiers of de-identification -----------------------------------------------------------


@slow
@given(names, names, births, zip5s, days)
def test_nothing_identifying_reaches_landing_and_the_analyst_view_is_safe_harbor(
    provider, given_name, family, birth, postal, today
):
    protector = Protector(default_policy(), provider.tokenizer(), provider.vault_cipher())
    record = _patient(given_name, family, birth, postal, f"{given_name[:1]}x@example.org")
    landing = protector.protect(record).landing
    text = json.dumps(landing, default=str)
    # Operational tier: no full birth date, no ZIP5, no name, SSN or MRN.
    assert birth.isoformat() not in text and birth not in landing.values()
    assert postal not in text
    assert "987-65-4329" not in text and "MRN0001" not in text
    for part in (given_name.strip(), family.strip()):
        if len(part) >= 4:
            assert f'"{part}"' not in text
    # Analyst tier, from landing values only: ZIP3 never a small area, year never 90+.
    analyst_zip = safe_zip3(landing["zip3"])
    assert analyst_zip == RESTRICTED_ZIP3 or analyst_zip in populous_zip3s()
    year = birth_year_for_analysts(landing["birth_year"], today)
    assert year is None or today.year - year < AGE_CAP
    if age_on(birth, today) >= AGE_CAP:
        assert age_label(age_on(birth, today)) == f"{AGE_CAP}+" and year is None


# -- vault ------------------------------------------------------------------------------------


@slow
@given(st.text(max_size=300), st.sampled_from(["email", "phone", "given_name"]))
def test_vault_round_trips_through_the_envelope_keyring(provider, value, column):
    cipher = provider.vault_cipher()
    version, blob = cipher.encrypt("t1_subject", column, value)
    assert provider.vault_cipher().decrypt("t1_subject", column, version, blob) == value


@slow
@given(st.data())
def test_tampered_ciphertext_or_swapped_associated_data_never_decrypts(provider, data):
    cipher = provider.vault_cipher()
    version, blob = cipher.encrypt("t1_alice", "email", "alice@example.org")
    position = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = blob[:position] + bytes([blob[position] ^ (1 << bit)]) + blob[position + 1 :]
    with pytest.raises(VaultDecryptionError) as error:
        cipher.decrypt("t1_alice", "email", version, tampered)
    assert "alice" not in str(error.value)
    subject, column = data.draw(
        st.tuples(st.sampled_from(["t1_alice", "t1_bob"]), st.sampled_from(["email", "phone"]))
    )
    assume((subject, column) != ("t1_alice", "email"))
    with pytest.raises(VaultDecryptionError):
        cipher.decrypt(subject, column, version, blob)


def test_data_keys_are_wrapped_and_the_keyring_holds_no_key_in_clear(tmp_path):
    provider = KeyringFileProvider(tmp_path / "keyring.json")
    cipher, tokenizer = provider.vault_cipher(), provider.tokenizer()
    stored = (tmp_path / "keyring.json").read_text()
    for key in (*cipher.keys.values(), tokenizer.key):
        assert base64.b64encode(key).decode() not in stored and key.hex() not in stored
    shown = repr(cipher) + repr(tokenizer) + repr(provider) + str(provider.versions("vault"))
    for key in (*cipher.keys.values(), tokenizer.key):
        assert repr(key) not in shown and base64.b64encode(key).decode() not in shown
    assert oct((tmp_path / "keyring.json").stat().st_mode & 0o777) == "0o600"


def test_a_passphrase_keyring_needs_the_passphrase_and_errors_never_show_keys(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HUB_KEYRING_PASSPHRASE", "correct horse battery staple")
    provider = KeyringFileProvider(tmp_path / "keyring.json")
    version, blob = provider.vault_cipher().encrypt("t1_a", "email", "a@example.org")
    key = provider.vault_cipher().keys[1]
    assert provider.master_kind() == "passphrase"
    monkeypatch.setenv("HUB_KEYRING_PASSPHRASE", "wrong")
    with pytest.raises(KeyConfigurationError) as wrong:
        KeyringFileProvider(tmp_path / "keyring.json").vault_cipher()
    monkeypatch.delenv("HUB_KEYRING_PASSPHRASE")
    with pytest.raises(KeyConfigurationError, match="HUB_KEYRING_PASSPHRASE"):
        KeyringFileProvider(tmp_path / "keyring.json").vault_cipher()
    for text in (str(wrong.value), repr(wrong.value)):
        assert base64.b64encode(key).decode() not in text and "correct horse" not in text
    monkeypatch.setenv("HUB_KEYRING_PASSPHRASE", "correct horse battery staple")
    again = KeyringFileProvider(tmp_path / "keyring.json").vault_cipher()
    assert again.decrypt("t1_a", "email", version, blob) == "a@example.org"


def test_a_plain_keyring_from_before_envelopes_is_wrapped_in_place_with_the_same_keys(tmp_path):
    plain = {
        kind: {"current": 1, "keys": {"1": base64.b64encode(KEYS[1]).decode()}}
        for kind in ("token", "vault")
    }
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps(plain))
    provider = KeyringFileProvider(path)
    assert provider.tokenizer().key == KEYS[1]
    assert provider.vault_cipher().keys == {1: KEYS[1]}
    assert json.loads(path.read_text())["format"] == 2
    assert base64.b64encode(KEYS[1]).decode() not in path.read_text()


def test_rewrapping_under_another_master_keeps_every_data_key(tmp_path, monkeypatch):
    provider = KeyringFileProvider(tmp_path / "keyring.json")
    provider.add_version("vault")
    before = provider.vault_cipher().keys
    provider.rewrap(PassphraseMasterKey("another passphrase"))
    monkeypatch.setenv("HUB_KEYRING_PASSPHRASE", "another passphrase")
    assert KeyringFileProvider(tmp_path / "keyring.json").vault_cipher().keys == before
    assert wrap_context("vault", 2) != wrap_context("token", 2)


# -- tokens -----------------------------------------------------------------------------------


@slow
@given(st.text(min_size=1, max_size=40), st.sampled_from(["email", "mrn", "subject:fhir"]))
def test_tokens_are_stable_across_runs_and_rekey_to_what_a_fresh_run_produces(value, kind):
    first_run = chained_tokenizer(KEYS, 1)
    second_run = chained_tokenizer(dict(KEYS), 1)
    assert first_run.token(kind, value) == second_run.token(kind, value)
    v3 = chained_tokenizer(KEYS, 3)
    old = first_run.token(kind, value)
    assert v3.rekey(old) == v3.token(kind, value) == v3.rekey(chained_tokenizer(KEYS, 2).rekey(old))
    assert v3.token(kind, value).startswith("t3_") and old != v3.token(kind, value)


@slow
@given(names, names, births, st.emails())
def test_the_same_person_from_fhir_and_crm_gets_the_same_identity_keys(
    provider, given_name, family, birth, email
):
    assume(given_name.strip(" '-") and family.strip(" '-"))
    protector = Protector(default_policy(), provider.tokenizer(), provider.vault_cipher())
    fhir = _patient(given_name, family, birth, "10001", email)
    crm = SourceRecord(
        "contact",
        "row 2",
        {
            "subject_system": "crm",
            "subject_id": "C1",
            "email": f"  {email.upper()} ",
            "given_name": given_name.upper(),
            "family_name": family,
            "birth_date": birth,
        },
    )
    fhir_keys = dict(protector.protect(fhir).identity_keys)
    crm_keys = dict(protector.protect(crm).identity_keys)
    assert fhir_keys.get("email") == crm_keys.get("email")
    if "name_dob" in fhir_keys:
        assert fhir_keys["name_dob"] == crm_keys["name_dob"]


# -- DLP and k-anonymity ----------------------------------------------------------------------


@slow
@given(
    st.text(alphabet=string.ascii_letters + " .,;", max_size=60),
    st.from_regex(r"\A9[0-9]{2}-[0-9]{2}-[0-9]{4}\Z"),
    st.from_regex(r"\A[a-z]{3,10}\.[a-z]{2,8}@example\.(org|com)\Z"),
    st.from_regex(r"\A\([2-9][0-9]{2}\) [2-9][0-9]{2}-[0-9]{4}\Z"),
)
def test_dlp_finds_identifiers_in_any_text_and_reports_no_values(noise, ssn, email, phone):
    text = f"{noise} {ssn} {noise} {email}; call {phone}."
    findings = DlpScanner().scan(text)
    kinds = Counter(f.kind for f in findings)
    assert kinds["ssn"] >= 1 and kinds["email"] >= 1 and kinds["phone"] >= 1
    assert all(isinstance(f, Finding) for f in findings)
    for finding in findings:
        assert ssn not in repr(finding) and email not in repr(finding)


@given(names, names)
def test_exact_matching_ignores_case_and_accents(given_name, family):
    full = f"{given_name.strip()} {family.strip()}"
    assume(len(full.strip()) >= 4)
    scanner = DlpScanner(kinds=(), exact={"name": [full]})
    assert not scanner.is_clean(f"note: {full.upper()} called")
    from domain.normalize import fold_accents

    assert not scanner.is_clean(f"note: {fold_accents(full)} called")


@slow
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["100", "606", "967", None]),
            st.integers(1925, 2020) | st.none(),
            st.sampled_from(["female", "male", "other"]),
        ),
        min_size=1,
        max_size=300,
    ),
    st.integers(2, 15),
)
def test_kanon_suggestion_leaves_no_cell_below_k_after_suppression(rows, k):
    report = kanon_report(rows, k=k, max_suppression=1.0)
    assert report.suggestion is not None
    levels = report.suggestion.levels
    quasi = ("zip3", "birth_year", "sex")
    functions = [dict(HIERARCHIES[q])[levels[q]] for q in quasi]
    cells = Counter(tuple(f(v) for f, v in zip(functions, row, strict=True)) for row in rows)
    kept = {cell: n for cell, n in cells.items() if n >= k}
    suppressed = sum(n for n in cells.values() if n < k)
    assert suppressed == report.suggestion.records_to_suppress
    assert all(n >= k for n in kept.values())
    assert report.records_in_small_cells == sum(c.count for c in report.small_cells)


def test_keys_module_never_logs(tmp_path, caplog):
    caplog.set_level("DEBUG")
    provider = KeyringFileProvider(Path(tmp_path) / "keyring.json")
    provider.add_version("vault")
    key = provider.vault_cipher().keys[2]
    assert base64.b64encode(key).decode() not in caplog.text

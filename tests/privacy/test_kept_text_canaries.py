"""Property: no canary PHI typed into a kept text/code field survives into the landing row.

For every entity and every field the policy keeps as text, code, unit or uri, a canary
(an email, phone, SSN or full date, anywhere in the value; in records with direct
identifiers also the record's own given/family name, street or phone digits) is placed in
the field; the protected landing row must not contain it, and the drop is counted.
"""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from domain.dlp import fold
from domain.kept_guard import KEEP_SHAPES, VOCABULARY
from domain.policy import default_policy
from domain.protect import Protector
from domain.records import SourceRecord
from domain.tokens import Tokenizer
from domain.vault_cipher import VaultCipher

POLICY = default_policy()
GUARDED = [
    (entity, name)
    for entity, policy in POLICY.entities.items()
    for name, actions in policy.fields.items()
    if any(a.startswith("keep:") and a[5:] in KEEP_SHAPES for a in actions)
]
WITH_NAMES = {e for e, p in POLICY.entities.items() if "family_name" in p.fields}

_phone = st.tuples(
    st.integers(200, 999), st.integers(200, 999), st.integers(0, 9999), st.sampled_from("-. (")
).map(
    lambda t: (
        f"({t[0]}) {t[1]}-{t[2]:04d}" if t[3] == "(" else f"{t[0]}{t[3]}{t[1]}{t[3]}{t[2]:04d}"
    )
)
_ssn = st.tuples(st.integers(100, 899), st.integers(10, 99), st.integers(1000, 9999)).map(
    lambda t: f"{t[0]}-{t[1]}-{t[2]}"
)
_date = st.dates(date(1900, 1, 1), date(2030, 12, 31)).flatmap(
    lambda d: st.sampled_from([d.isoformat(), f"{d.month}/{d.day}/{d.year}"])
)
_email = st.tuples(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=12).filter(
        lambda s: s[0].isalnum() and s[-1].isalnum()
    ),
    st.sampled_from(["example.org", "mail.example.com", "hospital.net"]),
).map(lambda t: f"{t[0]}@{t[1]}")
_word = st.text("abcdefghijklmnopqrstuvwxyzéèüñ", min_size=4, max_size=12)
_context = st.sampled_from(["", "pt ", "note: ", "see "]), st.sampled_from(["", " x", ", ok"])


def _protector() -> Protector:
    return Protector(POLICY, Tokenizer(bytes(range(32))), VaultCipher({1: bytes(32)}, 1))


def _record(entity: str) -> dict[str, object]:
    return {"subject_system": "fhir", "subject_id": "p-1", "source_id": "s-1"}


def _assert_gone(entity: str, fields: dict[str, object], field: str, canary: str) -> None:
    protector = _protector()
    landing = protector.protect(SourceRecord(entity, "l", fields)).landing
    needle = fold(canary)
    for column, value in landing.items():
        if isinstance(value, str) and not column.endswith("_token"):
            assert needle not in fold(value), (entity, field, column)
    assert landing.get(field) is None
    assert sum(protector.dropped.values()) == 1
    assert all(key[:2] == (entity, field) for key in protector.dropped)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from(GUARDED),
    canary=st.one_of(_phone, _ssn, _date, _email),
    prefix=_context[0],
    suffix=_context[1],
)
def test_pattern_canaries_never_reach_landing(target, canary, prefix, suffix):
    entity, field = target
    fields = _record(entity)
    fields[field] = f"{prefix}{canary}{suffix}"
    _assert_gone(entity, fields, field, canary)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from([t for t in GUARDED if t[0] in WITH_NAMES]),
    given_name=_word,
    family_name=_word,
    which=st.sampled_from(["given_name", "family_name", "address_line", "phone_digits"]),
    upper=st.booleans(),
    prefix=_context[0],
    suffix=_context[1],
)
def test_the_records_own_identifiers_never_reach_landing(
    target, given_name, family_name, which, upper, prefix, suffix
):
    assume(fold(given_name) not in VOCABULARY and fold(family_name) not in VOCABULARY)
    entity, field = target
    fields = _record(entity)
    fields.update(
        given_name=given_name,
        family_name=family_name,
        address_line="42 Quarry Lane",
        phone="617-555-0142",
        email="someone@example.org",
    )
    canary = {
        "given_name": given_name,
        "family_name": family_name,
        "address_line": "42 Quarry Lane",
        "phone_digits": "6175550142",
    }[which]
    fields[field] = f"{prefix}{canary.upper() if upper else canary}{suffix}"
    _assert_gone(entity, fields, field, canary)

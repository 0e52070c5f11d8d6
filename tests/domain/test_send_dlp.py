"""The send-time DLP check: a payload carries only declared fields, and a declared field
never smuggles an identifier of a kind it is not declared to hold."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.send_dlp import check_payload

names = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll")), min_size=1, max_size=20)
ssns = st.tuples(st.integers(100, 899), st.integers(10, 99), st.integers(1000, 9999)).map(
    lambda t: f"{t[0]}-{t[1]}-{t[2]}"
)
phones = st.tuples(st.integers(200, 999), st.integers(200, 999), st.integers(1000, 9999)).map(
    lambda t: f"({t[0]}) {t[1]}-{t[2]}"
)
dates = st.dates().map(lambda d: d.isoformat())
emails = st.from_regex(r"[a-z]{1,10}@[a-z]{1,10}\.(org|com|net)", fullmatch=True)


@given(name=names)
def test_a_plain_declared_name_passes(name):
    assert check_payload("a@example.org", {"given_name": name}, ["given_name"]) == []


@given(prefix=names, identifier=st.one_of(ssns, phones, dates, emails))
def test_an_identifier_inside_a_name_field_is_refused(prefix, identifier):
    findings = check_payload(
        "a@example.org", {"given_name": f"{prefix} {identifier}"}, ["given_name"]
    )
    assert findings and all(f.field == "given_name" for f in findings)
    assert all(identifier not in f"{f.field}{f.kind}" for f in findings)  # never the value


@given(name=names)
def test_an_undeclared_field_is_refused_whatever_it_holds(name):
    findings = check_payload(
        "a@example.org", {"given_name": name, "family_name": name}, ["given_name"]
    )
    assert [(f.field, f.kind) for f in findings] == [("family_name", "undeclared")]


@given(day=dates)
def test_a_declared_date_field_may_hold_a_date(day):
    assert check_payload("a@example.org", {"birth_date": day}, ["birth_date"]) == []


def test_the_address_must_be_only_an_address():
    assert check_payload("a@example.org", {}, []) == []
    assert [f.kind for f in check_payload("not an address", {}, [])] == ["not_an_address"]

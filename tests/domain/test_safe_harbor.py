"""Safe Harbor generalization never leaks a restricted ZIP3, a full date or an age over 89."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from domain.safe_harbor import (
    RESTRICTED_ZIP3,
    age_label,
    age_on,
    birth_year_for_analysts,
    populous_zip3s,
    safe_zip3,
)

HHS_RESTRICTED = [
    "036",
    "059",
    "063",
    "102",
    "203",
    "556",
    "692",
    "790",
    "821",
    "823",
    "830",
    "831",
    "878",
    "879",
    "884",
    "890",
    "893",
]


def test_every_hhs_restricted_prefix_becomes_000():
    for prefix in HHS_RESTRICTED:
        assert safe_zip3(prefix + "01") == RESTRICTED_ZIP3


def test_populous_prefixes_are_kept_and_unknown_prefixes_become_000():
    assert safe_zip3("10001") == "100"
    assert safe_zip3("00001") == RESTRICTED_ZIP3  # not in the census table


@given(st.from_regex(r"\A[0-9]{5}\Z"))
def test_generalized_zip_is_three_digits_and_never_a_small_area(zip5: str):
    generalized = safe_zip3(zip5)
    assert generalized is not None and len(generalized) == 3
    assert generalized == RESTRICTED_ZIP3 or generalized in populous_zip3s()
    assert generalized not in HHS_RESTRICTED


@given(st.dates(min_value=date(1900, 1, 1)), st.dates(min_value=date(2000, 1, 1)))
def test_ages_over_89_collapse_and_birth_year_is_withheld(birth: date, today: date):
    age = age_on(birth, today)
    label = age_label(age)
    if age >= 90:
        assert label == "90+"
    year = birth_year_for_analysts(birth.year, today)
    assert year is None or today.year - year < 90

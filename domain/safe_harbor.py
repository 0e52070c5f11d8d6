"""HIPAA Safe Harbor generalization rules (45 CFR 164.514(b)(2)) for the analyst tier.

ZIP codes keep their first three digits only where the three-digit area holds more than
20,000 people (2020 Census); other prefixes, prefixes missing from the census table and the
HHS guidance list all become '000'. Dates keep the year; ages over 89 collapse to '90+'.
"""

from __future__ import annotations

import csv
from datetime import date
from functools import cache
from importlib import resources

RESTRICTED_ZIP3 = "000"
AGE_CAP = 90


@cache
def populous_zip3s() -> frozenset[str]:
    """ZIP3 prefixes that may be shown: in the census table, not flagged, not on HHS's list."""
    data = resources.files("domain") / "data"
    with (data / "hipaa_restricted_zip3_lists.csv").open() as handle:
        hhs_or_small = {
            row["zip3"]
            for row in csv.DictReader(handle)
            if row["hhs_2012_guidance_census2000"] == "1" or row["census2020_le_20000"] == "1"
        }
    with (data / "zip3_population_census2020.csv").open() as handle:
        return frozenset(
            row["zip3"]
            for row in csv.DictReader(handle)
            if row["safe_harbor_restricted"] == "0" and row["zip3"] not in hhs_or_small
        )


def zip3(postal_code: str | None) -> str | None:
    """First three digits of a US ZIP, or None when there is no usable ZIP."""
    if not postal_code:
        return None
    digits = postal_code.strip()[:5]
    if len(digits) < 3 or not digits[:3].isdigit():
        return None
    return digits[:3]


def safe_zip3(postal_code: str | None) -> str | None:
    prefix = zip3(postal_code)
    if prefix is None:
        return None
    return prefix if prefix in populous_zip3s() else RESTRICTED_ZIP3


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def age_label(age: int) -> str:
    """'90+' for anyone over 89, the age otherwise (Safe Harbor: ages over 89 are identifying)."""
    return f"{AGE_CAP}+" if age >= AGE_CAP else str(age)


def birth_year_for_analysts(birth_year: int | None, today: date) -> int | None:
    """Birth year, except for people aged 90 or more, whose year would reveal the age."""
    if birth_year is None:
        return None
    # A year difference of 90 may already mean age 90: withhold it too (conservative).
    return None if today.year - birth_year >= AGE_CAP else birth_year

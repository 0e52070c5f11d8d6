"""Canary people: distinctive PHI injected into the generator's own FHIR, HL7 and CRM shapes.

Each canary replaces the demographics of one generated person (so every source renders it
exactly as it renders anyone), and also appears in deliberately bad records (a FHIR Patient
with an unparseable birth date, a CRM row with a bad date and PHI in its free-text notes) so
the quarantine path is exercised. `canary_values` lists every spelling a leak could take.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from random import Random

from domain.normalize import normalize_name
from synthetic import fhir
from synthetic import names as N
from synthetic.clock import Clock
from synthetic.crm import HEADER, CrmRenderer
from synthetic.hl7 import Hl7Renderer
from synthetic.people import AUTH_ACTIVE, Address, PersonFactory
from synthetic.sinks import Sinks


@dataclass(frozen=True)
class Canary:
    given: str
    family: str
    ascii_given: str  # how legacy feeds fold it
    ascii_family: str
    email: str
    phone_area: str
    phone_line: str  # 555-0xxx outside the generator's 555-01xx range
    ssn: str
    mrn: str
    address_line: str
    postal_code: str
    birth: date


CANARIES = (
    Canary(
        "Zoë-Anaïs",
        "Quiñónez-Wółkowski",
        "Zoe-Anais",
        "Quinonez-Wolkowski",
        "zoe.quinonez.canary@example.org",
        "415",
        "555-0234",
        "987-65-4329",
        "QZMRN739155",
        "4471 Canary Wharf Lane",
        "05501",
        date(1931, 2, 27),
    ),
    Canary(
        "Ðorđe",
        "Ærøskøbing-Þórsson",
        "Dorde",
        "Aeroskobing-Thorsson",
        "dj.aeroskobing.canary@example.net",
        "646",
        "555-0287",
        "989-12-3456",
        "QZMRN739156",
        "9 Rue de la Canarie",
        "05544",
        date(1944, 10, 31),
    ),
    Canary(
        "Siobhán",
        "Ó Ceallaigh-Nguyễn",
        "Siobhan",
        "O Ceallaigh-Nguyen",
        "siobhan.canary+hub@example.com",
        "312",
        "555-0299",
        "988-44-1122",
        "QZMRN739157",
        "12 Yellowbird Court",
        "00501",
        date(1958, 6, 17),
    ),
)


def canary_values(canaries: tuple[Canary, ...] = CANARIES) -> dict[str, list[str]]:
    """Every form a canary could leak in, by kind (the scanner folds case and accents)."""
    values: dict[str, list[str]] = {
        "name": [],
        "email": [],
        "phone": [],
        "ssn": [],
        "mrn": [],
        "address": [],
        "postal_code": [],
        "birth_date": [],
    }
    for c in canaries:
        digits = c.phone_area + c.phone_line.replace("-", "")
        values["name"] += [
            f"{c.given} {c.family}",
            f"{c.family}^{c.given}",
            f"{c.ascii_given} {c.ascii_family}",
            f"{c.ascii_family}^{c.ascii_given}",
            c.family,
            c.ascii_family,
            normalize_name(c.family) or "",
        ]
        values["email"] += [c.email]
        values["phone"] += [
            f"{c.phone_area}-{c.phone_line}",
            f"({c.phone_area}) {c.phone_line}",
            f"{c.phone_area} {c.phone_line.replace('-', ' ')}",
            digits,
            f"+1{digits}",
            f"{c.phone_area}^{c.phone_line.replace('-', '')}",
        ]
        values["ssn"] += [c.ssn, c.ssn.replace("-", "")]
        values["mrn"] += [c.mrn]
        values["address"] += [c.address_line]
        values["postal_code"] += [c.postal_code]
        values["birth_date"] += [
            c.birth.isoformat(),
            c.birth.strftime("%Y%m%d"),
            c.birth.strftime("%m/%d/%Y"),
        ]
    return values


@contextmanager
def _names_known(canaries: tuple[Canary, ...]) -> Iterator[None]:
    """The renderers look names up in the generator's folding and email-key tables."""
    added = []
    for c in canaries:
        for name, ascii_name in ((c.given, c.ascii_given), (c.family, c.ascii_family)):
            for table, value in ((N.FOLDED, ascii_name), (N.EMAIL_KEY, N.email_key(name))):
                if name not in table:
                    table[name] = value
                    added.append((table, name))
    try:
        yield
    finally:
        for table, name in added:
            table.pop(name, None)


def write_canary_sources(
    out: Path, canaries: tuple[Canary, ...] = CANARIES, filler: int = 25, seed: int = 97
) -> None:
    """fhir/, hl7/ and crm/ under `out`: `filler` ordinary people plus the canaries."""
    as_of = date.today()
    clock = Clock(as_of)
    rng = Random(seed)
    factory = PersonFactory(rng, clock.flu_season_days)
    hl7 = Hl7Renderer(rng, clock)
    crm = CrmRenderer(rng, clock)
    bad_crm_rows = []
    with _names_known(canaries), Sinks(out) as sinks:
        for i in range(filler + len(canaries)):
            p = factory.make(i)
            canary = canaries[i - filler] if i >= filler else None
            if canary is not None:
                p.given, p.family, p.middle = canary.given, canary.family, None
                p.email, p.ssn, p.mrn = canary.email, canary.ssn, canary.mrn
                p.phone_area, p.phone_line = canary.phone_area, canary.phone_line
                p.address = Address(
                    canary.address_line, "", p.address.city, p.address.state, canary.postal_code
                )
                p.birth_d = (as_of - canary.birth).days
                p.deceased, p.in_hl7 = False, True
                p.auth = (AUTH_ACTIVE, 30, -300, None)  # signed a month ago, expires later
                p.fhir_marketing = 1
            fhir.render(p, clock, sinks.fhir)
            if p.in_hl7:
                hl7.render(p, sinks.hl7)
            row = crm.patient_row(p)
            while canary is not None and row is None:
                row = crm.patient_row(p)
            if row is None:
                continue
            if canary is not None:
                row[HEADER.index("email")] = canary.email
                row[HEADER.index("notes")] = (
                    f"SSN {canary.ssn}; call {canary.given} at ({canary.phone_area})"
                    f" {canary.phone_line}; lives at {canary.address_line}"
                )
                bad = list(row)
                bad[HEADER.index("contact_id")] = f"CBADCANARY{i}"
                bad[HEADER.index("birth_date")] = "31/02/" + str(canary.birth.year)
                bad_crm_rows.append(bad)
                good_birth = f'"birthDate":"{clock.iso[p.birth_d]}"'
                broken = fhir.patient_line(p, clock).replace(p.id, f"{p.id}-bad")
                sinks.fhir["Patient"].append(
                    broken.replace(good_birth, f'"birthDate":"{canary.birth:%d.%m.%Y}"')
                )
            sinks.crm.append(row)
        sinks.crm.extend(bad_crm_rows)


def crm_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "crm" / "contacts.csv", newline="") as handle:
        return list(csv.DictReader(handle))

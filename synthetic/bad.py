"""Deliberately bad records, a few of each kind, so connectors' quarantine paths get exercised.

Bad records use made-up people from their own random stream (MRNs 9xxxxxxxx, outside the
8-digit range real patients get), so they never collide with, or change, the good data.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import Any

import orjson

from synthetic import codes as C
from synthetic import fhir
from synthetic.clock import Clock
from synthetic.hl7 import msh, pid
from synthetic.names import EMAIL_KEY
from synthetic.people import Person, PersonFactory, pick_name


@dataclass(frozen=True, slots=True)
class BadKind:
    """One kind of deliberately bad record: where it goes and the reason code it should earn."""

    name: str
    file: str  # relative path, or "fhir/*" for kinds spread over all FHIR files
    reason: str  # the domain.reasons code a connector should quarantine it with
    description: str


KINDS = (
    BadKind(
        "fhir_not_json",
        "fhir/*",
        "NOT_JSON",
        "an NDJSON line that is not JSON (truncated object, XML, Python repr)",
    ),
    BadKind(
        "fhir_missing_resource_type",
        "fhir/*",
        "FHIR_NOT_A_RESOURCE",
        "a JSON object without resourceType",
    ),
    BadKind(
        "fhir_stu3_consent",
        "fhir/Consent.000.ndjson",
        "FHIR_WRONG_VERSION",
        "an STU3-shaped Consent: patient as a string, top-level period, consentingParty, no scope",
    ),
    BadKind(
        "fhir_bad_birth_date",
        "fhir/Patient.000.ndjson",
        "BAD_DATE",
        "a Patient whose birthDate is not a date (e.g. 1980-13-45)",
    ),
    BadKind(
        "hl7_missing_msh",
        "hl7/*",
        "HL7_MISSING_MSH",
        "a message whose first segment is PID, not MSH; one at the start of each HL7 file",
    ),
    BadKind(
        "hl7_missing_pid",
        "hl7/adt.hl7",
        "HL7_MISSING_PID",
        "an ADT^A04 with MSH, EVN and PV1 but no PID",
    ),
    BadKind(
        "crm_bad_birth_date",
        "crm/contacts.csv",
        "CRM_BAD_DATE",
        "a contact row whose birth_date is not YYYY-MM-DD (e.g. 31/02/1980)",
    ),
    BadKind(
        "crm_missing_contact_id",
        "crm/contacts.csv",
        "CRM_MISSING_KEY",
        "a contact row with an empty contact_id",
    ),
    BadKind(
        "crm_bad_opt_in",
        "crm/contacts.csv",
        "CRM_BAD_BOOLEAN",
        "a contact row whose email_opt_in is not yes/no (e.g. maybe)",
    ),
)
KIND_BY_NAME = {k.name: k for k in KINDS}
# Kinds placed after a chosen person, ~0.1% of people each (at least one).
SCATTERED = tuple(k.name for k in KINDS if k.name != "hl7_missing_msh")

_BAD_DATES = ("1980-13-45", "1975-00-12", "12/31/1969")
_BAD_CRM_DATES = ("31/02/1980", "1980-02-31", "02/31/80")
_BAD_BOOLEANS = ("maybe", "Y?", "unknown")


def _line(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode() + "\n"


def bad_count(patients: int) -> int:
    """How many records of each scattered kind: ~0.1% of patients, at least one."""
    return max(1, round(patients / 1000))


class BadRecords:
    """Plans where bad records go and renders them from made-up people."""

    def __init__(self, rng: Random, clock: Clock) -> None:
        self.rng = rng
        self.clock = clock
        self.factory = PersonFactory(rng, clock.flu_season_days)
        self.made = 0
        self.counts = dict.fromkeys((k.name for k in KINDS), 0)

    def plan(self, patients: int) -> dict[int, list[str]]:
        """Person index -> the bad kinds to write right after that person's records."""
        at: dict[int, list[str]] = {}
        k = min(bad_count(patients), patients)
        for name in SCATTERED:
            for i in sorted(self.rng.sample(range(patients), k)):
                at.setdefault(i, []).append(name)
        return at

    def fake(self) -> Person:
        """A made-up person whose MRN cannot belong to a real one and who has no email."""
        p = self.factory.make(self.made)
        self.made += 1
        p.mrn = f"9{self.rng.randrange(100_000_000):08d}"
        p.email = None
        return p

    # FHIR ---------------------------------------------------------------------------------

    def fhir_not_json(self, p: Person) -> tuple[str, str]:
        n = self.counts["fhir_not_json"]
        rtype = fhir.RESOURCE_TYPES[n % len(fhir.RESOURCE_TYPES)]
        variant = n % 3
        if variant == 0:
            # A line cut short, as when an export job dies mid-write (cut on a character).
            text = fhir.patient_line(p, self.clock).replace('"Patient"', f'"{rtype}"', 1)
            line = text[: len(text) // 2]
        elif variant == 1:
            line = f'<{rtype} xmlns="http://hl7.org/fhir"><id value="{p.id}"/></{rtype}>'
        else:
            line = repr({"resourceType": rtype, "id": p.id, "status": "final"})
        return rtype, line + "\n"

    def fhir_missing_resource_type(self, p: Person) -> tuple[str, str]:
        n = self.counts["fhir_missing_resource_type"]
        rtype = fhir.RESOURCE_TYPES[(n + 4) % len(fhir.RESOURCE_TYPES)]
        obj: dict[str, Any] = {
            "id": f"{p.id}-x{n}",
            "status": "final",
            "subject": {"reference": f"Patient/{p.id}"},
            "code": {"coding": [{"system": C.LOINC, "code": C.HBA1C[0]}]},
        }
        return rtype, _line(obj)

    def fhir_stu3_consent(self, p: Person) -> tuple[str, str]:
        iso = self.clock.iso
        obj = {
            "resourceType": "Consent",
            "id": f"{p.id}-stu3",
            "status": "active",
            "category": [{"coding": [{"system": C.LOINC, "code": "59284-0"}]}],
            # STU3: patient was a Reference too, but legacy exporters flatten it to a string;
            # period and consentingParty exist only in STU3; R4's required scope is missing.
            "patient": f"Patient/{p.id}",
            "period": {"start": iso[400], "end": iso[-300]},
            "consentingParty": [{"reference": f"Patient/{p.id}"}],
            "dateTime": self.clock.instant(400, 600),
            "policyRule": "http://hl7.org/fhir/ConsentPolicy/opt-in",
            "purpose": [{"system": "http://hl7.org/fhir/v3/ActReason", "code": "HMARKT"}],
        }
        return "Consent", _line(obj)

    def fhir_bad_birth_date(self, p: Person) -> tuple[str, str]:
        fake = self.fake()
        good = f'"birthDate":"{self.clock.iso[fake.birth_d]}"'
        bad = _BAD_DATES[self.counts["fhir_bad_birth_date"] % len(_BAD_DATES)]
        return "Patient", fhir.patient_line(fake, self.clock).replace(good, f'"birthDate":"{bad}"')

    # HL7 ----------------------------------------------------------------------------------

    def hl7_missing_msh(self, kind: str) -> str:
        """A headerless message for the start of an HL7 file (see README: why only there)."""
        p = self.fake()
        c = self.clock
        segment = pid(
            p,
            c,
            given=p.given,
            family=p.family,
            address=f"{p.address.line}^^{p.address.city}^{p.address.state}^"
            f"{p.address.postal_code}^USA^H",
            phone=f"^PRN^PH^^1^{p.phone_area}^{p.phone_line.replace('-', '')}",
        )
        tail = {
            "adt": "PV1|1|O\r",
            "oru": f"OBX|1|NM|{C.HBA1C[0]}^{C.HBA1C[1]}^LN||6.1|%^%^UCUM|||||F\r",
            "siu": "RGS|1|A\r",
            "vxu": f"RXA|0|1|{c.hl7[30]}|{c.hl7[30]}|140^Influenza^CVX|0.5\r",
        }[kind]
        return segment + tail

    def hl7_missing_pid(self, ctrl: str) -> str:
        when = self.clock.hl7_ts(int(self.rng.random() * 300), 600)
        return msh("ADT^A04^ADT_A01", when, ctrl) + f"EVN|A04|{when}\rPV1|1|O\r"

    # CRM ----------------------------------------------------------------------------------

    def crm_row(self, kind: str) -> list[str]:
        n = self.counts[kind]
        given, family = pick_name(self.rng, self.rng.randrange(2))
        iso = self.clock.iso
        row = [
            f"CBAD{self.rng.randrange(10**8):08d}",
            f"{EMAIL_KEY[given][0]}.bad{self.rng.randrange(10**6)}@example.com",
            given,
            family,
            "(555) 555-0100",
            iso[9000 + self.rng.randrange(9000)],
            "02134",
            "",
            "",
            "yes",
            "",
            "",
            "",
            "",
            "",
            self.clock.instant(5, 600),
        ]
        if kind == "crm_bad_birth_date":
            row[5] = _BAD_CRM_DATES[n % len(_BAD_CRM_DATES)]
        elif kind == "crm_missing_contact_id":
            row[0] = ""
        else:
            row[9] = _BAD_BOOLEANS[n % len(_BAD_BOOLEANS)]
        return row

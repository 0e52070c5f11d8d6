"""Render a Person as HL7 v2.5.1 messages (ADT^A04/A08, ORU^R01, SIU^S12/S15/S26, VXU^V04).

Segments end with CR; messages are simply concatenated, each starting with MSH. The same
people as in FHIR (same MRN and assigning authority), with the disagreements real feeds have:
upper-case or ASCII-only names, a newer address or phone in an A08 update, and now and then
a lab result newer than anything in the FHIR export.
"""

from __future__ import annotations

from random import Random

from synthetic import codes as C
from synthetic import names as N
from synthetic.clock import Clock
from synthetic.people import FEMALE, MALE, OTHER, PHONE_LINES, Person, make_address

FILES = ("adt", "oru", "siu", "vxu")

_SEX = {FEMALE: "F", MALE: "M", OTHER: "O"}
# MSH-18 declares UTF-8: names keep their accents.
_MSH_HEAD = "MSH|^~\\&|HUBEHR|HUBHOSP|AUDIENCEHUB|HUBHOSP|"
_MSH_TAIL = "|P|2.5.1|||AL|NE||UNICODE UTF-8\r"
_SCH_STATUS = ("Booked", "Complete", "Noshow", "Cancelled")
_SIU_EVENT = ("S12", "S12", "S26", "S15")
_SCH_REASON = (
    "NEW^New booking^HL70276",
    "NEW^New booking^HL70276",
    "NOSHOW^No show^L",
    "CANCEL^Cancelled by patient^L",
)
_HBA1C_CE = f"{C.HBA1C[0]}^{C.HBA1C[1]}^LN"
_EMPTY = ("",) * 20
_RACE = [
    f"{code}^{display}^CDCREC" if code != "UNK" else "UNK^Unknown^NULLFL"
    for code, display, _ in N.RACES
]
_ETHNICITY = [
    f"{code}^{display}^CDCREC" if code != "UNK" else "UNK^Unknown^NULLFL"
    for code, display, _ in N.ETHNICITIES
]
_LANGUAGE = [f"{code}^{display}^ISO639" for code, display, _ in N.LANGUAGES]


class ControlIds:
    """Unique MSH-10 values per file: a prefix plus a running number."""

    def __init__(self) -> None:
        self.counters = dict.fromkeys(FILES, 0)

    def next(self, kind: str) -> str:
        self.counters[kind] += 1
        return f"{kind.upper()}{self.counters[kind]:010d}"


def msh(msg_type: str, ts: str, ctrl: str) -> str:
    """The MSH segment (with its CR)."""
    return f"{_MSH_HEAD}{ts}||{msg_type}|{ctrl}{_MSH_TAIL}"


def pid(p: Person, clock: Clock, *, given: str, family: str, address: str, phone: str) -> str:
    """The PID segment (with its CR) for p, with the name/address/phone variant to show."""
    telecom = f"{phone}~^NET^Internet^{p.email}" if p.email else phone
    death = "||||||||Y" if p.deceased else ""  # PID-30 patient death indicator
    return (
        f"PID|1||{p.mrn}^^^{C.MRN_AUTHORITY}^MR||{family}^{given}^{p.middle or ''}^^^^L||"
        f"{clock.hl7[p.birth_d]}|{_SEX.get(p.sex, 'U')}||{_RACE[p.race]}|{address}||{telecom}||"
        f"{_LANGUAGE[p.language]}||||{p.ssn or ''}|||{_ETHNICITY[p.ethnicity]}{death}\r"
    )


def seg(*fields: str) -> str:
    """One segment from its fields (the first is the segment id), terminated by CR."""
    return "|".join(fields) + "\r"


def _xad(line: str, line2: str, city: str, state: str, zip5: str) -> str:
    return f"{line}^{line2}^{city}^{state}^{zip5}^USA^H"


def _xtn(area: str, line: str, mobile: bool) -> str:
    use, equipment = ("PRN", "CP") if mobile else ("PRN", "PH")
    return f"^{use}^{equipment}^^1^{area}^{line.replace('-', '')}"


class Hl7Renderer:
    """Builds each person's HL7 messages; draws its variations from the shared random stream."""

    def __init__(self, rng: Random, clock: Clock) -> None:
        self.rng = rng
        self.clock = clock
        self.ids = ControlIds()

    def render(self, p: Person, out: dict[str, list[str]]) -> None:
        """Append p's messages (strings) to out["adt"|"oru"|"siu"|"vxu"]."""
        rnd = self.rng.random
        clock = self.clock
        ts = clock.hl7_ts
        ids = self.ids

        # Name as this feed spells it: legacy interfaces upper-case or strip accents.
        given, family = p.given, p.family
        r = rnd()
        if r < 0.2:
            given, family = given.upper(), family.upper()
        elif r < 0.5:
            given, family = N.FOLDED[given], N.FOLDED[family]
        a = p.address
        address = _xad(a.line, a.line2, a.city, a.state, a.postal_code)
        phone = _xtn(p.phone_area, p.phone_line, p.mobile)
        segment = pid(p, clock, given=given, family=family, address=address, phone=phone)

        when = ts(p.registered_d, 540 + int(rnd() * 480))
        out["adt"].append(
            msh("ADT^A04^ADT_A01", when, ids.next("adt"))
            + f"EVN|A04|{when}\r"
            + segment
            + "PV1|1|O\r"
        )
        # ~30% get a later A08 with a newer address and/or phone than the FHIR Patient has.
        if rnd() < 0.3:
            r = rnd()
            if r < 0.65:
                moved, _ = make_address(self.rng)
                address = _xad(moved.line, moved.line2, moved.city, moved.state, moved.postal_code)
            if r > 0.5:
                phone = _xtn(p.phone_area, PHONE_LINES[int(rnd() * 100)], not p.mobile)
            d = int(rnd() * p.updated_d) if p.updated_d > 0 else 0
            when = ts(d, int(rnd() * 1440))
            out["adt"].append(
                msh("ADT^A08^ADT_A01", when, ids.next("adt"))
                + f"EVN|A08|{when}\r"
                + pid(p, clock, given=given, family=family, address=address, phone=phone)
                + "PV1|1|O\r"
            )

        results = list(p.hba1c)
        # Some diabetics have a newer HbA1c in the lab feed than in the FHIR export.
        if results and results[0][0] > 182 and rnd() < 0.2:
            results.append((int(rnd() * 60) + 1, 480, results[0][2]))
        for n, (d, m, value) in enumerate(results):
            when = ts(d, m)
            ctrl = ids.next("oru")
            flag = "H" if value >= 5.7 else "N"
            out["oru"].append(
                msh("ORU^R01^ORU_R01", ts(d, min(m + 120, 1439)), ctrl)
                + segment
                + seg("ORC", "RE", f"{p.id}-L{n}^HUBEHR", f"{ctrl}^HUBLAB")
                + seg(
                    "OBR",
                    "1",
                    f"{p.id}-L{n}^HUBEHR",
                    f"{ctrl}^HUBLAB",
                    _HBA1C_CE,
                    "",
                    "",
                    when,
                    *_EMPTY[:14],
                    when,
                    "",
                    "CH",
                    "F",
                )
                + seg(
                    "OBX",
                    "1",
                    "NM",
                    _HBA1C_CE,
                    "",
                    str(value),
                    "%^%^UCUM",
                    "4.0-5.6",
                    flag,
                    "",
                    "",
                    "F",
                    "",
                    "",
                    when,
                )
            )

        for n, (status, d, m, minutes, service, created) in enumerate(p.appointments):
            code, display = C.SERVICES[service]
            start = ts(d, m)
            end_m = m + minutes
            end = ts(d - end_m // 1440, end_m % 1440)
            # S12 when booked; cancellations (S15) and no-shows (S26) come on the day itself.
            sent = ts(created, 600) if status in (C.BOOKED, C.FULFILLED) else ts(max(d, 0), 700)
            appt_id = f"{p.id}-s{n}"
            out["siu"].append(
                msh(f"SIU^{_SIU_EVENT[status]}^SIU_S12", sent, ids.next("siu"))
                + seg(
                    "SCH",
                    f"{appt_id}^HUBEHR",
                    f"{appt_id}^HUBEHR",
                    "",
                    "",
                    "",
                    _SCH_REASON[status],
                    "ROUTINE^Routine^HL70276",
                    "NORMAL^Normal^HL70277",
                    str(minutes),
                    "min^minutes^ISO+",
                    f"^^{minutes}^{start}^{end}",
                    *_EMPTY[:13],
                    _SCH_STATUS[status],
                )
                + segment
                + "RGS|1|A\r"
                + seg(
                    "AIS",
                    "1",
                    "A",
                    f"{code}^{display}^HUBSVC",
                    start,
                    "",
                    "",
                    str(minutes),
                    "min^minutes^ISO+",
                )
            )

        if p.immunizations:
            last = min(d for _, d in p.immunizations)
            body = [msh("VXU^V04^VXU_V04", ts(last, 900), ids.next("vxu")), segment]
            for n, (vi, d) in enumerate(p.immunizations):
                code, display = C.VACCINES[vi]
                day = clock.hl7[d]
                body.append(f"ORC|RE||{p.id}-i{n}^HUBEHR\r")
                body.append(
                    seg(
                        "RXA",
                        "0",
                        "1",
                        day,
                        day,
                        f"{code}^{display}^CVX",
                        "0.5",
                        "mL^mL^UCUM",
                        "",
                        "00^New immunization record^NIP001",
                        *_EMPTY[:10],
                        "CP",
                        "A",
                    )
                )
            out["vxu"].append("".join(body))

"""One synthetic person at a time: demographics, clinical history and consent state.

A `Person` holds only small ints, strings and tuples; renderers (fhir, hl7, crm) turn it into
records. Dates are "days before as_of" (see clock.py) so that care-gap segments stay populated
whatever day the data is generated for.
"""

from __future__ import annotations

from bisect import bisect
from dataclasses import dataclass, field
from random import Random

from synthetic import codes as C
from synthetic import names as N

FEMALE, MALE, OTHER, UNKNOWN = range(4)

# Marketing authorization states (shared by the FHIR Consent and the CRM columns).
AUTH_ACTIVE, AUTH_EXPIRED, AUTH_REVOKED = range(3)

# 555-0100..0199 are the numbers set aside for fiction: no real subscriber gets called.
PHONE_LINES = tuple(f"555-01{n:02d}" for n in range(100))
_ZIP_SUFFIXES = tuple(f"{n:02d}" for n in range(1, 99))
_CITY_POOL = N.CITIES
_RESTRICTED_POOL = N.RESTRICTED_CITIES


@dataclass(slots=True)
class Address:
    """A postal address; `line2` is an apartment or unit, often empty."""

    line: str
    line2: str
    city: str
    state: str
    postal_code: str


@dataclass(slots=True)
class Person:
    """Everything the renderers need about one person; dates are day offsets from as_of."""

    index: int
    id: str
    mrn: str
    ssn: str | None
    given: str
    middle: str | None
    family: str
    sex: int
    age: int
    birth_d: int
    email: str | None
    phone_area: str
    phone_line: str
    mobile: bool
    address: Address
    language: int
    race: int
    ethnicity: int
    deceased: bool | None
    updated_d: int
    updated_m: int
    registered_d: int
    # (condition index, onset day, active?)
    conditions: list[tuple[int, int, bool]] = field(default_factory=list)
    # (class index, type index, start day, start minute, end day or None, end minute)
    encounters: list[tuple[int, int, int, int, int | None, int]] = field(default_factory=list)
    # (day, minute, bmi, systolic, diastolic) at the most recent adult visit
    vitals: tuple[int, int, float, int, int] | None = None
    # (day, minute, value %)
    hba1c: list[tuple[int, int, float]] = field(default_factory=list)
    # (medication index, authored day, status)
    meds: list[tuple[int, int, str]] = field(default_factory=list)
    # (vaccine index, day)
    immunizations: list[tuple[int, int]] = field(default_factory=list)
    # (procedure index, day, minute)
    procedures: list[tuple[int, int, int]] = field(default_factory=list)
    # (status, start day, start minute, minutes, service index, created day)
    appointments: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    # (state, signed day, expires day, revoked day or None) for the HIPAA marketing auth
    auth: tuple[int, int, int, int | None] | None = None
    fhir_marketing: int = 0  # 0: none, 1: Consent mirrors `auth`, 2: a marketing deny
    treatment_consent: bool = False
    in_hl7: bool = False


def uuid_like(rng: Random) -> str:
    """A deterministic UUID v4-shaped string from the generator's random stream."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


# Cumulative probabilities of the weighted pools, for bisect (a C call, no Python loop).
_LANGUAGE_CUM = [row[2] for row in N.LANGUAGES]
_RACE_CUM = [row[2] for row in N.RACES]
_ETHNICITY_CUM = [row[2] for row in N.ETHNICITIES]


def make_address(rng: Random, restricted_share: float = 0.03) -> tuple[Address, str]:
    """A random address and the phone area code that goes with its city."""
    rnd = rng.random
    pool = _RESTRICTED_POOL if rnd() < restricted_share else _CITY_POOL
    city, state, zip3s, areas = pool[int(rnd() * len(pool))]
    zip3 = zip3s[int(rnd() * len(zip3s))]
    number = 1 + int(rnd() * 9899)
    line = (
        f"{number} {N.STREETS[int(rnd() * len(N.STREETS))]} "
        f"{N.STREET_SUFFIXES[int(rnd() * len(N.STREET_SUFFIXES))]}"
    )
    line2 = N.UNITS[int(rnd() * len(N.UNITS))] if rnd() < 0.2 else ""
    postal = zip3 + _ZIP_SUFFIXES[int(rnd() * 98)]
    return Address(line, line2, city, state, postal), areas[int(rnd() * len(areas))]


def pick_name(rng: Random, sex: int) -> tuple[str, str]:
    """(given, family); about 8% of each part comes from the accented pools."""
    rnd = rng.random
    if sex in (OTHER, UNKNOWN):
        sex = FEMALE if rnd() < 0.5 else MALE
    if rnd() < 0.08:
        pool = N.FEMALE_ACCENTED if sex == FEMALE else N.MALE_ACCENTED
    else:
        pool = N.FEMALE_GIVEN if sex == FEMALE else N.MALE_GIVEN
    given = pool[int(rnd() * len(pool))]
    pool = N.FAMILY_ACCENTED if rnd() < 0.08 else N.FAMILY
    return given, pool[int(rnd() * len(pool))]


class PersonFactory:
    """Makes person number i from the shared random stream; ids are unique bijections of i."""

    def __init__(self, rng: Random, flu_season_days: int) -> None:
        self.rng = rng
        self.flu_season_days = flu_season_days
        # Offsets so that MRNs and SSNs differ between seeds but stay unique within a run.
        self.mrn_offset = rng.randrange(90_000_000)
        self.ssn_offset = rng.randrange(100_000_000)

    def mrn(self, i: int) -> str:
        # 7919 is prime and coprime with 9e7, so i -> MRN is a bijection on 8-digit numbers.
        return str(10_000_000 + (i * 7919 + self.mrn_offset) % 90_000_000)

    def ssn(self, i: int) -> str:
        # Area numbers 900-999 are never issued as SSNs, so no real person's SSN is produced.
        n = f"{(i * 104729 + self.ssn_offset) % 100_000_000:08d}"
        return f"9{n[:2]}-{n[2:4]}-{n[4:]}"

    def make(self, i: int) -> Person:
        rng = self.rng
        rnd = rng.random

        r = rnd()
        sex = FEMALE if r < 0.505 else MALE if r < 0.99 else OTHER if r < 0.995 else UNKNOWN
        r = rnd()
        if r < 0.20:
            age, band = int(rnd() * 18), 0
        elif r < 0.50:
            age, band = 18 + int(rnd() * 27), 1
        elif r < 0.77:
            age, band = 45 + int(rnd() * 20), 2
        else:
            age, band = 65 + int(rnd() * 31), 3
        birth_d = int(age * 365.2425) + 1 + int(rnd() * 364)

        given, family = pick_name(rng, sex)
        middle = N.MIDDLE_INITIALS[int(rnd() * len(N.MIDDLE_INITIALS))] if rnd() < 0.3 else None
        address, area = make_address(rng)
        if rnd() < 0.92:
            g, f = N.EMAIL_KEY[given], N.EMAIL_KEY[family]
            dom = N.EMAIL_DOMAINS[int(rnd() * 3)]
            r = rnd()
            # The person index in every address keeps emails unique across the whole run.
            if r < 0.5:
                email = f"{g}.{f}{i}@{dom}"
            elif r < 0.8:
                email = f"{g[0]}{f}{i}@{dom}"
            else:
                email = f"{f}.{g}{i}@{dom}"
        else:
            email = None
        deceased_draw = rnd()
        deceased_p = 0.06 if band == 3 else 0.005
        deceased = True if deceased_draw < deceased_p else (False if deceased_draw > 0.7 else None)
        updated_d = min(1 + int(rnd() * 400), birth_d)
        registered_d = min(updated_d + int(rnd() * 3000), birth_d)
        p = Person(
            index=i,
            id=uuid_like(rng),
            mrn=self.mrn(i),
            ssn=self.ssn(i) if rnd() < 0.7 else None,
            given=given,
            middle=middle,
            family=family,
            sex=sex,
            age=age,
            birth_d=birth_d,
            email=email,
            phone_area=area,
            phone_line=PHONE_LINES[int(rnd() * 100)],
            mobile=rnd() < 0.6,
            address=address,
            language=bisect(_LANGUAGE_CUM, rnd()),
            race=bisect(_RACE_CUM, rnd()),
            ethnicity=bisect(_ETHNICITY_CUM, rnd()),
            deceased=deceased,
            updated_d=updated_d,
            updated_m=int(rnd() * 1440),
            registered_d=registered_d,
        )
        self._clinical(p, band)
        self._consent(p)
        p.in_hl7 = rnd() < 0.6
        return p

    def _clinical(self, p: Person, band: int) -> None:
        rnd = self.rng.random
        birth_d, age = p.birth_d, p.age
        adult = age >= 18

        # Conditions, by age-band prevalence (diabetes comes first and excludes prediabetes).
        has = [False] * len(C.CONDITIONS)
        conditions = p.conditions
        for ci, prevalence in enumerate(C.CONDITION_PREVALENCE[band]):
            if prevalence and rnd() < prevalence:
                if ci == C.PREDIABETES and has[C.DIABETES]:
                    continue
                has[ci] = True
                onset = min(30 + int(rnd() * 5000), birth_d - 1)
                conditions.append((ci, max(onset, 0), rnd() < 0.93))

        # Encounters: ~12% have had no visit in 18 months (none at all, or only older ones).
        r = rnd()
        if r < 0.03:
            last = None
        elif r < 0.12:
            last = 549 + int(rnd() * 1100)
        else:
            last = int(rnd() * 548)
        encounters = p.encounters
        if last is not None and last < birth_d:
            d = last
            for _ in range(1 + int(rnd() * 3)):
                if d >= birth_d:
                    break
                r = rnd()
                if r < 0.85:
                    klass, start_m = 0, 480 + int(rnd() * 36) * 15
                    minutes = 15 + int(rnd() * 4) * 15
                    etype = int(rnd() * 3)
                elif r < 0.95:
                    klass, start_m, minutes = 1, int(rnd() * 1440), 120 + int(rnd() * 480)
                    etype = 0
                else:
                    klass, start_m, minutes = 2, int(rnd() * 1440), 1440 * (1 + int(rnd() * 6))
                    etype = 0
                total = start_m + minutes
                end_d = d - total // 1440
                # A stay that has not ended by as_of is still in progress: no end.
                encounters.append(
                    (klass, etype, d, start_m, end_d if end_d >= 0 else None, total % 1440)
                )
                d += 30 + int(rnd() * 400)

        # Vitals at the latest adult visit.
        if adult and encounters:
            _, _, d, m, _, _ = encounters[0]
            bmi_pool = C.BMI_OBESE if has[C.OBESITY] else C.BMI_NORMAL
            if has[C.HYPERTENSION]:
                systolic, diastolic = 130 + int(rnd() * 41), 80 + int(rnd() * 26)
            else:
                systolic, diastolic = 100 + int(rnd() * 36), 60 + int(rnd() * 26)
            p.vitals = (d, m, bmi_pool[int(rnd() * len(bmi_pool))], systolic, diastolic)

        # HbA1c: diabetics ~55% within 6 months, ~35% only older than 6 months, ~10% never.
        hba1c = p.hba1c
        if has[C.DIABETES]:
            r = rnd()
            d = None
            if r < 0.55:
                d = 1 + int(rnd() * 182)
            elif r < 0.90:
                d = 183 + int(rnd() * 540)
            if d is not None and d < birth_d:
                pool = C.HBA1C_DIABETIC
                hba1c.append((d, 420 + int(rnd() * 300), pool[int(rnd() * len(pool))]))
                if rnd() < 0.5 and d + 200 < birth_d:
                    hba1c.append(
                        (
                            d + 90 + int(rnd() * 110),
                            420 + int(rnd() * 300),
                            pool[int(rnd() * len(pool))],
                        )
                    )
        elif has[C.PREDIABETES] and rnd() < 0.6:
            pool = C.HBA1C_PREDIABETIC
            d = min(1 + int(rnd() * 720), birth_d - 1)
            hba1c.append((d, 420 + int(rnd() * 300), pool[int(rnd() * len(pool))]))
        elif band >= 2 and rnd() < 0.05:
            pool = C.HBA1C_NORMAL
            hba1c.append(
                (1 + int(rnd() * 720), 420 + int(rnd() * 300), pool[int(rnd() * len(pool))])
            )

        # Medications for treated chronic conditions.
        meds = p.meds
        for ci, onset, active in conditions:
            options = C.CONDITION_MEDS.get(ci)
            if options and rnd() < 0.85:
                d = min(int(rnd() * 400), onset)
                status = "active" if active and rnd() < 0.9 else "completed"
                meds.append((options[int(rnd() * len(options))], d, status))

        # Immunizations; about 40% have a flu shot this season.
        imms = p.immunizations
        season = self.flu_season_days
        if rnd() < (0.6 if band == 3 else 0.35):
            d = int(rnd() * (season + 1))
            if d < birth_d:
                imms.append((C.FLU_VACCINES[int(rnd() * 3)], d))
        elif rnd() < 0.35:
            d = season + 1 + int(rnd() * 240)
            if d < birth_d:
                imms.append((C.FLU_VACCINES[int(rnd() * 3)], d))
        if adult and rnd() < 0.3:
            imms.append((C.COVID_VACCINES[int(rnd() * 3)], 30 + int(rnd() * 1000)))
        if adult and rnd() < 0.15:
            imms.append((C.TDAP, min(30 + int(rnd() * 3000), birth_d - 1)))
        if age >= 50 and rnd() < 0.3:
            imms.append((C.ZOSTER, 30 + int(rnd() * 2000)))
        if band == 3 and rnd() < 0.35:
            imms.append((C.PCV13, 30 + int(rnd() * 2500)))
        if age < 18 and birth_d > 500 and rnd() < 0.8:
            imms.append((C.MMR, birth_d - 400))
            imms.append((C.DTAP, birth_d - 120))

        # Procedures: screening mammography for women 50-74 (~45% overdue or never screened),
        # colonoscopy, misc procedures, and ~6% of people with a procedure in the last 14 days.
        procs = p.procedures
        if p.sex == FEMALE and 40 <= age <= 74:
            r = rnd()
            if age < 50:
                d = 15 + int(rnd() * 700) if r < 0.3 else None
            elif r < 0.55:
                d = 15 + int(rnd() * 715)
            elif r < 0.85:
                d = 730 + int(rnd() * 1300)
            else:
                d = None
            if d is not None:
                kind = C.SCREENING_MAMMO if rnd() < 0.85 else C.DIAGNOSTIC_MAMMO
                procs.append((kind, d, 480 + int(rnd() * 40) * 15))
        if 45 <= age <= 75 and rnd() < 0.35:
            d = 30 + int(rnd() * 3650)
            m = 480 + int(rnd() * 32) * 15
            procs.append((C.COLONOSCOPY, d, m))
            if rnd() < 0.2:
                procs.append((C.POLYPECTOMY, d, min(m + 30, 1439)))
        if rnd() < 0.2:
            d = min(15 + int(rnd() * 1500), birth_d - 1)
            procs.append((C.MISC_PROCEDURES[int(rnd() * 6)], max(d, 0), 480 + int(rnd() * 600)))
        if rnd() < 0.06:
            d = min(int(rnd() * 15), birth_d - 1)
            kind = (
                C.SCREENING_MAMMO
                if p.sex == FEMALE and age >= 40 and rnd() < 0.3
                else C.MISC_PROCEDURES[int(rnd() * 6)]
            )
            procs.append((kind, max(d, 0), 480 + int(rnd() * 600)))

        # Appointments: upcoming in 1-3 days, recent no-shows, future bookings, past visits.
        appts = p.appointments
        alive = not p.deceased
        if alive and rnd() < 0.05:
            self._appointment(p, C.BOOKED, -(1 + int(rnd() * 3)), has[C.DIABETES])
        if rnd() < 0.03:
            self._appointment(p, C.NOSHOW, 1 + int(rnd() * 7), has[C.DIABETES])
        if alive and rnd() < 0.10:
            self._appointment(p, C.BOOKED, -(4 + int(rnd() * 57)), has[C.DIABETES])
        if rnd() < 0.25:
            self._appointment(p, C.FULFILLED, 8 + int(rnd() * 358), has[C.DIABETES])
        if rnd() < 0.04:
            self._appointment(p, C.CANCELLED, int(rnd() * 90) - 30, has[C.DIABETES])
        if len(appts) > 1:
            appts.sort(key=_by_start)

    def _appointment(self, p: Person, status: int, d: int, diabetic: bool) -> None:
        rnd = self.rng.random
        if d >= p.birth_d:
            return
        r = rnd()
        if p.sex == FEMALE and p.age >= 40 and r < 0.2:
            service = C.MAMMO_SERVICE
        elif diabetic and r < 0.4:
            service = C.DIABETES_SERVICE
        elif 45 <= p.age <= 75 and r < 0.1:
            service = C.COLONOSCOPY_SERVICE
        else:
            service = C.GENERAL_SERVICES[int(rnd() * len(C.GENERAL_SERVICES))]
        minutes = 15 * (1 + int(rnd() * 4))
        start_m = 480 + int(rnd() * 34) * 15
        created = max(d, 0) + 3 + int(rnd() * 50)
        p.appointments.append((status, d, start_m, minutes, service, min(created, p.birth_d)))

    def _consent(self, p: Person) -> None:
        rnd = self.rng.random
        # ~60% signed a HIPAA marketing authorization: active, expired, or revoked.
        if rnd() < 0.6:
            r = rnd()
            if r < 0.62:
                term = 730 if rnd() < 0.7 else 365
                signed = 1 + int(rnd() * (term - 10))
                p.auth = (AUTH_ACTIVE, signed, signed - term, None)
            elif r < 0.84:
                signed = 400 + int(rnd() * 1100)
                p.auth = (AUTH_EXPIRED, signed, signed - 365, None)
            else:
                signed = 30 + int(rnd() * 870)
                p.auth = (AUTH_REVOKED, signed, signed - 730, int(rnd() * signed))
            # Half of the authorizations are also on file in the EHR as a FHIR Consent.
            if rnd() < 0.5:
                p.fhir_marketing = 1
        elif rnd() < 0.05:
            p.fhir_marketing = 2
        p.treatment_consent = rnd() < 0.85


def _by_start(appt: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    return (-appt[1], appt[2])

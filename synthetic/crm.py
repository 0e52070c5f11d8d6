"""Render CRM/CDP contact rows: ~80% of patients (matchable by MRN, email or name + birth date)
plus CRM-only leads, with the marketing-authorization and opt-in columns the hub filters on.
"""

from __future__ import annotations

from random import Random

from synthetic import codes as C
from synthetic import names as N
from synthetic.clock import Clock
from synthetic.people import (
    AUTH_ACTIVE,
    AUTH_REVOKED,
    FEMALE,
    MALE,
    PHONE_LINES,
    Person,
    make_address,
    pick_name,
)

# Column order as documented in docs/data-contracts.md ("CRM contacts CSV").
HEADER = (
    "contact_id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "birth_date",
    "postal_code",
    "mrn",
    "mrn_authority",
    "email_opt_in",
    "marketing_auth_signed",
    "marketing_auth_expires",
    "marketing_auth_revoked",
    "unsubscribed_at",
    "notes",
    "updated_at",
)

# Free-text notes as agents type them: commas, quotes, a line break, and PHI the hub must drop.
NOTES = (
    "Prefers email, not phone",
    "Called 3x, no answer; left VM",
    'Asked about the "Healthy Heart" newsletter, sent link',
    "Mentioned A1c was 8.2, interested in diabetes class",
    'Said "please stop calling me", flagged for review',
    "Spouse has a separate account, same address",
    "Recent mammogram at Hub Imaging, wants results by mail",
    "SSN on intake form ends in 4417, verify at next visit",
    "Follow up in spring\nre: knee surgery consult",
    'Referred by Dr. O\'Neil (cardiology), "very motivated"',
    "Spanish-speaking, prefers texts, bilingual materials",
    "Event signup: 5K fun run, T-shirt size M",
)


class CrmRenderer:
    """Turns people into contact rows; draws its own variations from the shared random stream."""

    def __init__(self, rng: Random, clock: Clock) -> None:
        self.rng = rng
        self.clock = clock
        self.contacts = 0
        self.leads = 0
        self.offset = rng.randrange(900_000_000)

    def contact_id(self) -> str:
        self.contacts += 1
        # A bijection of the running number (7919 is coprime with 9e8): unique, not sequential.
        return f"C{100_000_000 + (self.contacts * 7919 + self.offset) % 900_000_000}"

    def _consent_columns(self, auth: tuple[int, int, int, int | None] | None) -> list[str]:
        """email_opt_in, marketing_auth_signed/expires/revoked, unsubscribed_at."""
        rnd = self.rng.random
        iso = self.clock.iso
        cols = ["yes" if rnd() < 0.85 else "no"]
        if auth:
            state, signed, expires, revoked = auth
            cols += [iso[signed], iso[expires], iso[revoked] if state == AUTH_REVOKED else ""]
        else:
            cols += ["", "", ""]
        cols.append(
            self.clock.instant(1 + int(rnd() * 700), int(rnd() * 1440)) if rnd() < 0.05 else ""
        )
        return cols

    def _phone(self, area: str, line: str) -> str:
        r = self.rng.random()
        if r < 0.5:
            return f"({area}) {line}"
        if r < 0.8:
            return f"{area}-{line}"
        return f"+1 {area} {line.replace('-', ' ')}"

    def _tail(self) -> list[str]:
        """notes, updated_at."""
        rnd = self.rng.random
        note = NOTES[int(rnd() * len(NOTES))] if rnd() < 0.3 else ""
        return [note, self.clock.instant(int(rnd() * 300), int(rnd() * 1440))]

    def patient_row(self, p: Person) -> list[str] | None:
        """The contact row for p, or None for the ~20% of patients not in the CRM."""
        rnd = self.rng.random
        if rnd() >= 0.8:
            return None
        iso = self.clock.iso
        r = rnd()
        kind = "mrn" if r < 0.55 else "email" if r < 0.8 else "name_dob"
        given, family = p.given, p.family
        if rnd() < 0.1:
            given, family = N.FOLDED[given], N.FOLDED[family]
        email = p.email or ""
        if kind == "name_dob" or not email:
            # A personal address the EHR does not know (or none): only name + DOB can match.
            g, f = N.EMAIL_KEY[p.given], N.EMAIL_KEY[p.family]
            email = f"{g}_{f}{p.index}@example.org" if rnd() < 0.6 else ""
        elif rnd() < 0.15:
            # Same mailbox, typed differently: case and stray whitespace.
            email = f" {email.title()}" if rnd() < 0.5 else f"{email.upper()} "
        birth = (
            ""
            if (kind == "mrn" and rnd() < 0.15) or (kind == "email" and rnd() < 0.5)
            else iso[p.birth_d]
        )
        postal = p.address.postal_code
        if rnd() < 0.2:
            postal += f"-{int(rnd() * 9999) + 1:04d}"
        return [
            self.contact_id(),
            email,
            given,
            family,
            self._phone(p.phone_area, p.phone_line),
            birth,
            postal,
            p.mrn if kind == "mrn" else "",
            C.MRN_AUTHORITY if kind == "mrn" else "",
            *self._consent_columns(p.auth),
            *self._tail(),
        ]

    def lead_row(self) -> list[str]:
        """A CRM-only lead (event signup, newsletter): not a patient of the hospital."""
        rnd = self.rng.random
        self.leads += 1
        sex = FEMALE if rnd() < 0.55 else MALE
        given, family = pick_name(self.rng, sex)
        address, area = make_address(self.rng)
        email = f"{N.EMAIL_KEY[given]}{N.EMAIL_KEY[family]}.{self.leads}@example.net"
        birth = self.clock.iso[int((18 + rnd() * 60) * 365.25)] if rnd() < 0.4 else ""
        auth = None
        if rnd() < 0.5:
            signed = 1 + int(rnd() * 700)
            auth = (AUTH_ACTIVE, signed, signed - 730, None)
        return [
            self.contact_id(),
            email,
            given,
            family,
            self._phone(area, PHONE_LINES[int(rnd() * 100)]),
            birth,
            address.postal_code,
            "",
            "",
            *self._consent_columns(auth),
            *self._tail(),
        ]

"""Date and time strings relative to `as_of`, precomputed once so records never format dates.

People store every date as an int "days before as_of" (negative = after as_of) and every time
of day as minutes after midnight. `Clock.iso[d]` is then a list lookup. The lists rely on
Python's negative indexing: index 0..PAST_DAYS-1 are as_of minus d days, and index -k is
as_of plus k days, so one list serves past and future.
"""

from __future__ import annotations

from datetime import date, timedelta

PAST_DAYS = 112 * 366  # older than the oldest birth date we generate
FUTURE_DAYS = 800  # farther ahead than any appointment or authorization expiry


class Clock:
    """Lookup tables of date and time strings around one `as_of` day."""

    def __init__(self, as_of: date) -> None:
        self.as_of = as_of
        days = [as_of - timedelta(days=d) for d in range(PAST_DAYS)]
        days += [as_of + timedelta(days=k) for k in range(FUTURE_DAYS, 0, -1)]
        # FHIR date, HL7 DT (YYYYMMDD)
        self.iso: list[str] = [d.isoformat() for d in days]
        self.hl7: list[str] = [s.replace("-", "") for s in self.iso]
        # Time-of-day suffixes by minute: FHIR instant ("T08:15:00Z") and HL7 ("081500").
        self.t_iso: list[str] = [f"T{m // 60:02d}:{m % 60:02d}:00Z" for m in range(1440)]
        self.t_hl7: list[str] = [f"{m // 60:02d}{m % 60:02d}00" for m in range(1440)]
        # Days since the current influenza season started (1 August), for "flu shot this season".
        season_year = as_of.year if as_of.month >= 8 else as_of.year - 1
        self.flu_season_days = (as_of - date(season_year, 8, 1)).days

    def instant(self, d: int, minute: int) -> str:
        """FHIR instant (UTC) for day offset d and minute of day."""
        return self.iso[d] + self.t_iso[minute]

    def hl7_ts(self, d: int, minute: int) -> str:
        """HL7 DTM in UTC with explicit offset, e.g. 20240501081500+0000."""
        return self.hl7[d] + self.t_hl7[minute] + "+0000"

"""Consent and authorization state: may this person be emailed for this purpose on this day?

The same rules are written in SQL in dbt (`int_consent_history`, sliced on the evaluation date
by `int_consent_state`, which the `consent_gate` macro reads); the
send step evaluates them again here, at push time, so no path reaches the engine on a
stale audience. Rules, per purpose, on day D (all events dated on or before D count):

- Suppression (hard bounce, complaint) excludes the address from every purpose.
- Authorization events of a purpose (permit/deny) replace each other by effective date; on
  the same day a deny wins. A permit with an expiry is invalid from the day after expiry.
- marketing: needs a valid permit (a written authorization), email opt-in, no unsubscribe.
- plan_benefits: needs a valid permit and no unsubscribe.
- fundraising: allowed until an opt-out (deny) or unsubscribe.
- treatment: allowed unless denied; unsubscribing from promotional mail does not stop care
  communications (CAN-SPAM covers commercial messages), suppression does.
- Email channel: opt_in / opt_out / unsubscribe replace each other by effective date.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

PURPOSES = ("treatment", "marketing", "fundraising", "plan_benefits")
AUTHORIZATION_EVENTS = ("permit", "deny")
CHANNEL_EVENTS = ("opt_in", "opt_out", "unsubscribe")
SUPPRESSION_EVENTS = ("hard_bounce", "complaint")

# Purposes that need an explicit, unexpired permit; the others are allowed until denied.
NEEDS_PERMIT = {"marketing": True, "plan_benefits": True, "fundraising": False, "treatment": False}
# Purposes the global email unsubscribe (CAN-SPAM) applies to.
UNSUBSCRIBE_APPLIES = {"marketing", "plan_benefits", "fundraising"}
# Purposes that need the person to have opted in to email.
NEEDS_OPT_IN = {"marketing"}


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    event_type: str  # permit | deny | opt_in | opt_out | unsubscribe | hard_bounce | complaint
    effective_on: date
    purpose: str | None = None  # for permit/deny only
    expires_on: date | None = None  # for permit only
    source_ref: str | None = None  # which record said so (a token, never PHI)


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    allowed: bool
    reason: str  # 'ok' or why not: no_authorization, expired, denied, revoked, ...
    source_ref: str | None = None


def _latest(events: list[ConsentEvent], precedence: dict[str, int]) -> ConsentEvent | None:
    """The event that decides: latest date; on a tie, the most restrictive."""
    if not events:
        return None
    return max(events, key=lambda e: (e.effective_on, precedence[e.event_type]))


def consent_state_on(
    events: Iterable[ConsentEvent], purpose: str, day: date, channel: str = "email"
) -> ConsentDecision:
    """Decide whether `purpose` messages may go to this person by `channel` on `day`."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    if channel != "email":
        raise ValueError(f"unknown channel {channel!r}")
    past = [e for e in events if e.effective_on <= day]

    suppressions = [e for e in past if e.event_type in SUPPRESSION_EVENTS]
    if suppressions:
        first = min(suppressions, key=lambda e: e.effective_on)
        reason = "hard_bounced" if first.event_type == "hard_bounce" else "complained"
        return ConsentDecision(False, reason, first.source_ref)

    channel_state = _latest(
        [e for e in past if e.event_type in CHANNEL_EVENTS],
        {"opt_in": 0, "opt_out": 1, "unsubscribe": 2},
    )
    if purpose in UNSUBSCRIBE_APPLIES and channel_state is not None:
        if channel_state.event_type == "unsubscribe":
            return ConsentDecision(False, "unsubscribed", channel_state.source_ref)
        if channel_state.event_type == "opt_out":
            return ConsentDecision(False, "not_opted_in", channel_state.source_ref)
    if purpose in NEEDS_OPT_IN and (channel_state is None or channel_state.event_type != "opt_in"):
        return ConsentDecision(False, "not_opted_in", None)

    decisive = _latest(
        [e for e in past if e.event_type in AUTHORIZATION_EVENTS and e.purpose == purpose],
        {"permit": 0, "deny": 1},
    )
    if decisive is None:
        if NEEDS_PERMIT[purpose]:
            return ConsentDecision(False, "no_authorization", None)
        return ConsentDecision(True, "ok", None)
    if decisive.event_type == "deny":
        had_permit = any(
            e.event_type == "permit" and e.purpose == purpose and e.effective_on <= day
            for e in past
        )
        return ConsentDecision(False, "revoked" if had_permit else "denied", decisive.source_ref)
    if decisive.expires_on is not None and day > decisive.expires_on:
        return ConsentDecision(False, "expired", decisive.source_ref)
    return ConsentDecision(True, "ok", decisive.source_ref)

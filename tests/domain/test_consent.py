"""The consent rules: who may be emailed for which purpose on which day."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.consent import PURPOSES, ConsentEvent, consent_state_on

TODAY = date(2026, 11, 23)
YESTERDAY = TODAY - timedelta(days=1)
OPTED_IN = ConsentEvent("opt_in", date(2025, 1, 1))
AUTHORIZED = ConsentEvent("permit", date(2025, 1, 1), "marketing", date(2027, 1, 1), "c1")


def decide(*events: ConsentEvent, purpose: str = "marketing", day: date = TODAY):
    return consent_state_on(list(events), purpose, day)


def test_valid_written_authorization_and_opt_in_allows_marketing():
    assert decide(OPTED_IN, AUTHORIZED).allowed


def test_authorization_expired_yesterday_is_invalid_today():
    expired = ConsentEvent("permit", date(2025, 1, 1), "marketing", YESTERDAY)
    decision = decide(OPTED_IN, expired)
    assert not decision.allowed and decision.reason == "expired"
    assert decide(OPTED_IN, expired, day=YESTERDAY).allowed


def test_revocation_this_morning_ends_marketing_today():
    decision = decide(OPTED_IN, AUTHORIZED, ConsentEvent("deny", TODAY, "marketing"))
    assert not decision.allowed and decision.reason == "revoked"


def test_unsubscribe_ends_marketing_but_not_care_messages():
    unsubscribed = ConsentEvent("unsubscribe", YESTERDAY)
    assert decide(OPTED_IN, AUTHORIZED, unsubscribed).reason == "unsubscribed"
    assert decide(OPTED_IN, unsubscribed, purpose="treatment").allowed


def test_suppression_ends_every_purpose():
    for kind, reason in (("hard_bounce", "hard_bounced"), ("complaint", "complained")):
        for purpose in PURPOSES:
            decision = decide(OPTED_IN, AUTHORIZED, ConsentEvent(kind, YESTERDAY), purpose=purpose)
            assert not decision.allowed and decision.reason == reason


def test_treatment_reaches_a_person_without_marketing_authorization():
    assert decide(purpose="treatment").allowed
    assert decide().reason == "not_opted_in"
    assert decide(OPTED_IN).reason == "no_authorization"


def test_later_permit_after_revocation_restores_consent():
    revoked = ConsentEvent("deny", date(2025, 6, 1), "marketing")
    renewed = ConsentEvent("permit", date(2025, 9, 1), "marketing", None, "c2")
    assert decide(OPTED_IN, AUTHORIZED, revoked, renewed).allowed


event_types = st.sampled_from(
    ["permit", "deny", "opt_in", "opt_out", "unsubscribe", "hard_bounce", "complaint"]
)
days = st.dates(min_value=date(2024, 1, 1), max_value=date(2027, 12, 31))
events = st.builds(
    ConsentEvent,
    event_type=event_types,
    effective_on=days,
    purpose=st.sampled_from(list(PURPOSES)),
    expires_on=st.none() | days,
)


@given(st.lists(events, max_size=8), st.sampled_from(list(PURPOSES)), days)
def test_no_one_suppressed_or_unconsented_is_ever_allowed_marketing(history, purpose, day):
    decision = consent_state_on(history, purpose, day)
    past = [e for e in history if e.effective_on <= day]
    if any(e.event_type in ("hard_bounce", "complaint") for e in past):
        assert not decision.allowed
    if purpose == "marketing" and decision.allowed:
        permits = [e for e in past if e.purpose == "marketing" and e.event_type == "permit"]
        assert permits, "marketing allowed without any written authorization"
        assert any(e.expires_on is None or e.expires_on >= day for e in permits)


@given(st.lists(events, max_size=8), st.sampled_from(list(PURPOSES)), days)
def test_future_events_never_change_todays_decision(history, purpose, day):
    past_only = [e for e in history if e.effective_on <= day]
    assert consent_state_on(history, purpose, day) == consent_state_on(past_only, purpose, day)

"""The consent rules: who may be emailed for which purpose on which day."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from domain.consent import (
    NEEDS_OPT_IN,
    NEEDS_PERMIT,
    PURPOSES,
    UNSUBSCRIBE_APPLIES,
    ConsentDecision,
    ConsentEvent,
    consent_state_on,
)

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


def reference_state_on(events: list[ConsentEvent], purpose: str, day: date) -> ConsentDecision:
    """The rules in their plainest form - the events filtered into lists, the decisive ones
    taken with min() and max() - as the one-pass consent_state_on must decide them."""
    past = [e for e in events if e.effective_on <= day]
    suppressions = [e for e in past if e.event_type in ("hard_bounce", "complaint")]
    if suppressions:
        first = min(suppressions, key=lambda e: e.effective_on)
        reason = "hard_bounced" if first.event_type == "hard_bounce" else "complained"
        return ConsentDecision(False, reason, first.source_ref)

    def latest(kinds: dict[str, int], of_purpose: bool) -> ConsentEvent | None:
        chosen = [
            e for e in past if e.event_type in kinds and (not of_purpose or e.purpose == purpose)
        ]
        return max(chosen, key=lambda e: (e.effective_on, kinds[e.event_type]), default=None)

    channel = latest({"opt_in": 0, "opt_out": 1, "unsubscribe": 2}, of_purpose=False)
    if purpose in UNSUBSCRIBE_APPLIES and channel is not None:
        if channel.event_type == "unsubscribe":
            return ConsentDecision(False, "unsubscribed", channel.source_ref)
        if channel.event_type == "opt_out":
            return ConsentDecision(False, "not_opted_in", channel.source_ref)
    if purpose in NEEDS_OPT_IN and (channel is None or channel.event_type != "opt_in"):
        return ConsentDecision(False, "not_opted_in", None)
    decisive = latest({"permit": 0, "deny": 1}, of_purpose=True)
    if decisive is None:
        if NEEDS_PERMIT[purpose]:
            return ConsentDecision(False, "no_authorization", None)
        return ConsentDecision(True, "ok", None)
    if decisive.event_type == "deny":
        had_permit = any(e.event_type == "permit" and e.purpose == purpose for e in past)
        return ConsentDecision(False, "revoked" if had_permit else "denied", decisive.source_ref)
    if decisive.expires_on is not None and day > decisive.expires_on:
        return ConsentDecision(False, "expired", decisive.source_ref)
    return ConsentDecision(True, "ok", decisive.source_ref)


# Few dates and refs, so that ties (same day, same kind) and the first-given rule are common;
# "note" stands for a kind the rules do not know, which every rule must ignore.
tied_events = st.builds(
    ConsentEvent,
    event_type=st.sampled_from(
        ["permit", "deny", "opt_in", "opt_out", "unsubscribe", "hard_bounce", "complaint", "note"]
    ),
    effective_on=st.sampled_from([YESTERDAY, TODAY, TODAY + timedelta(days=1)]),
    purpose=st.none() | st.sampled_from(list(PURPOSES)),
    expires_on=st.none() | st.sampled_from([YESTERDAY, TODAY]),
    source_ref=st.none() | st.sampled_from(["r1", "r2", "r3"]),
)


# Full ties (same day, same kind): the first given decides, and its reference is returned.
TIES = [
    [ConsentEvent("unsubscribe", TODAY, None, None, ref) for ref in ("r1", "r2")],
    [ConsentEvent("deny", TODAY, "marketing", None, ref) for ref in ("r1", "r2")],
    [ConsentEvent("permit", TODAY, "marketing", None, ref) for ref in ("r1", "r2")],
]


@settings(max_examples=1000)
@example([OPTED_IN, *TIES[2]], "marketing", TODAY)
@example(TIES[1], "marketing", TODAY)
@example(TIES[0], "marketing", TODAY)
@given(
    st.lists(tied_events, max_size=10) | st.lists(events, max_size=8),
    st.sampled_from(list(PURPOSES)),
    st.sampled_from([YESTERDAY, TODAY]) | days,
)
def test_the_one_pass_decides_as_the_plain_rules_do(history, purpose, day):
    assert consent_state_on(history, purpose, day) == reference_state_on(history, purpose, day)

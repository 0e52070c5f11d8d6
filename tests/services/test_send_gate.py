"""The send-time gate's cache rule: a decision holds through `stable_until` for the same
events, whatever the purpose (property test against domain/consent.py)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from domain.consent import PURPOSES, ConsentEvent, consent_state_on
from services.send_gate import stable_until

days = st.dates(min_value=dt.date(2025, 1, 1), max_value=dt.date(2026, 12, 31))
event = st.builds(
    ConsentEvent,
    event_type=st.sampled_from(
        ["permit", "deny", "opt_in", "opt_out", "unsubscribe", "hard_bounce", "complaint"]
    ),
    effective_on=days,
    purpose=st.sampled_from([*PURPOSES, None]),
    expires_on=st.none() | days,
    source_ref=st.none() | st.text(max_size=3),
)


@given(events=st.lists(event, max_size=8), day=days, later=st.integers(0, 800))
def test_a_decision_holds_until_stable_until(events, day, later):
    until = stable_until(events, day)
    assert until >= day
    other = day + dt.timedelta(days=later)
    if other <= until:
        for purpose in PURPOSES:
            assert consent_state_on(events, purpose, other) == consent_state_on(
                events, purpose, day
            )

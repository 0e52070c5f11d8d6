"""Both example journeys end to end on generated demo-like data against the SANDBOX engine:
ticks step through three weeks of logical time in seconds, engagement is read back between
ticks, and the step metrics land in the dbt marts and the HTML report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import yaml

from services.journeys import load, run_journeys
from tests.ops.conftest import DIABETES, SURVEY

pytestmark = pytest.mark.slow


def rows(warehouse, sql: str, *params) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(sql, params).fetchall()


def test_both_journeys_run_to_the_end_for_everyone_who_entered(journey_run, ops_warehouse):
    status = dict(
        rows(
            ops_warehouse,
            "select journey || ':' || status, count(*) from journeys.positions group by 1",
        )
    )
    for journey in (DIABETES, SURVEY):
        assert status.get(f"{journey}:completed", 0) > 0, status
        assert status.get(f"{journey}:active", 0) == 0, status


def test_all_three_diabetes_messages_and_both_survey_messages_go_out(journey_run, ops_warehouse):
    sent = dict(
        rows(
            ops_warehouse,
            "select journey || '.' || step, count(*) from journeys.sends where status = 'acked'"
            " group by 1",
        )
    )
    for step in ("welcome", "meal_planning", "book_test"):
        assert sent.get(f"{DIABETES}.{step}", 0) > 0, sent
    assert sent.get(f"{SURVEY}.survey", 0) > 0, sent
    # The reminder goes to exactly those who did not engage with the survey in five days.
    reminded = sent.get(f"{SURVEY}.survey_reminder", 0)
    (not_engaged,) = rows(
        ops_warehouse,
        "select count(*) from journeys.step_log where journey = %s and step = 'after_survey'"
        " and outcome like 'case 1:%%'",
        SURVEY,
    )[0]
    # ...unless the consent gate stopped them at the reminder (e.g. a hard bounce since).
    (stopped,) = rows(
        ops_warehouse,
        "select count(*) from journeys.positions where journey = %s and step = 'survey_reminder'"
        " and status = 'exited' and exit_reason like 'consent:%%'",
        SURVEY,
    )[0]
    assert reminded == not_engaged - stopped


@pytest.mark.parametrize(
    ("journey", "branch", "send", "opened_to", "otherwise_to"),
    [
        (DIABETES, "after_welcome", "welcome", "meal_planning", "welcome_reminder"),
        (SURVEY, "after_survey", "survey", "mark_opened", "survey_reminder"),
    ],
)
def test_branches_follow_what_each_person_did_with_the_message(
    journey_run, ops_warehouse, journey, branch, send, opened_to, otherwise_to
):
    decided = rows(
        ops_warehouse,
        "select l.person_token, next.step from journeys.step_log l"
        " join journeys.step_log next on next.journey = l.journey"
        "  and next.person_token = l.person_token and next.step in (%s, %s)"
        "  and next.entered_at = l.completed_at"
        " where l.journey = %s and l.step = %s and l.completed_at is not null",
        opened_to,
        otherwise_to,
        journey,
        branch,
    )
    assert decided
    openers = {
        p
        for (p,) in rows(
            ops_warehouse,
            "select distinct person_token from engagement.events where audience = %s"
            " and event_type = 'open' and not machine_open",
            f"j.{journey}.{send}",
        )
    }
    for person, went_to in decided:
        assert went_to == (opened_to if person in openers else otherwise_to)


def test_a_complaint_and_an_arriving_lab_result_each_end_a_journey(journey_run, ops_warehouse):
    outcome = dict(
        rows(
            ops_warehouse,
            "select person_token, exit_reason from journeys.positions where journey = %s"
            " and person_token in (%s, %s)",
            DIABETES,
            journey_run["revoked"],
            journey_run["lab_person"],
        )
    )
    assert outcome[journey_run["revoked"]] == "consent:complained"
    assert outcome[journey_run["lab_person"]] == "exit:lab_result:hba1c"
    # The complaint came after the welcome: nothing was sent to that person since.
    steps = [
        step
        for (step,) in rows(
            ops_warehouse,
            "select step from journeys.sends where journey = %s and person_token = %s",
            DIABETES,
            journey_run["revoked"],
        )
    ]
    assert steps == ["welcome"]


def test_step_metrics_land_in_the_marts_and_the_report(journey_run, ops_warehouse):
    metrics = {
        (journey, step): (entries, sends, opens, clicks, drop_off)
        for journey, step, entries, sends, opens, clicks, drop_off in rows(
            ops_warehouse,
            "select journey, step, entries, sends, opens, clicks, drop_off"
            " from marts.journey_step_metrics",
        )
    }
    logged = dict(
        rows(
            ops_warehouse,
            "select journey || '/' || step, count(*) from journeys.step_log group by 1",
        )
    )
    for (journey, step), (entries, sends, opens, clicks, _) in metrics.items():
        assert entries == logged.get(f"{journey}/{step}", 0)
        assert opens <= sends and clicks <= sends
    assert metrics[(DIABETES, "welcome")][1] > 0
    assert metrics[(SURVEY, "survey")][1] > 0
    assert sum(m[4] for (j, _), m in metrics.items() if j == DIABETES) >= 2  # the two exits
    outcomes = rows(ops_warehouse, "select distinct journey from marts.journey_outcomes")
    assert {j for (j,) in outcomes} >= {DIABETES, SURVEY}

    html = journey_run["report"].read_text()
    section = html.split("<h2>Journey drop-off</h2>", 1)[1].split("</section>", 1)[0]
    assert 'src="data:image/png;base64,' in section
    assert DIABETES in section and SURVEY in section


def test_the_journeys_asset_charts_entries_per_step_in_its_metadata(journey_run):
    result = journey_run["result"]
    materialization = next(
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey(["journeys", "positions"])
    )
    metadata = materialization.materialization.metadata
    assert "data:image/png;base64," in metadata["entries_by_step"].value
    assert set(metadata["by_journey"].value) >= {DIABETES, SURVEY}


def test_a_changed_journey_cannot_send_someone_back_to_a_step_they_completed(
    built, ops_warehouse, tmp_path
):
    """v1: mark -> hold. v2 (edited while people wait in hold): hold -> mark. The person may
    not enter mark a second time: they leave the journey instead."""
    base = {
        "name": "revisit_probe",
        "description": "test",
        "owner": "tests",
        "purpose": "treatment",
        "entry": {"segment": "diabetes_hba1c_overdue"},
    }
    first = [
        {"id": "mark", "update_attribute": {"name": "probe", "value": "1"}, "next": "hold"},
        {"id": "hold", "wait": {"days": 1}},
    ]
    second = [
        {"id": "hold", "wait": {"days": 1}, "next": "mark"},
        {"id": "mark", "update_attribute": {"name": "probe", "value": "2"}},
    ]
    now = datetime.now(UTC)
    path = tmp_path / "revisit_probe.yaml"
    with ops_warehouse.connect() as conn:
        path.write_text(yaml.safe_dump({**base, "steps": first}))
        (first_tick,) = run_journeys(conn, None, None, load(tmp_path), destination="x", now=now)
        assert first_tick.entered > 0
        path.write_text(yaml.safe_dump({**base, "steps": second}))
        (tick,) = run_journeys(
            conn, None, None, load(tmp_path), destination="x", now=now + timedelta(days=2)
        )
        assert dict(tick.exited) == {"revisit_refused": first_tick.entered}
        entered_twice = conn.execute(
            "select count(*) from (select person_token from journeys.step_log"
            " where journey = 'revisit_probe' and step = 'mark'"
            " group by person_token having count(*) > 1) twice"
        ).fetchone()[0]
        values = conn.execute(
            "select distinct value from journeys.attributes where name = 'probe'"
        ).fetchall()
    assert entered_twice == 0
    assert values == [("1",)]

"""Asset checks: the consent gate blocks activation when it fails; freshness warns."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.execution.api import create_execution_plan

from assets.consent_checks import consent_gate_check
from assets.freshness_checks import freshness_checks

pytestmark = pytest.mark.slow

GATE_STEP = "marts__audience_membership_consent_gate"


@pytest.mark.parametrize("job_name", ["full_pipeline", "incremental", "consent_fast_path"])
def test_every_job_that_activates_waits_for_the_consent_gate(ops_defs, job_name):
    plan = create_execution_plan(ops_defs.resolve_job_def(job_name))
    sync = plan.get_step_by_key("audience_syncs")
    assert GATE_STEP in plan.step_keys_to_execute
    assert GATE_STEP in sync.get_execution_dependency_keys()


def test_a_failing_consent_gate_stops_the_sync_in_the_same_run(
    built, ops_defs, ops_resources, ops_warehouse, instance
):
    """Someone slips a person without authorization into a marketing audience (a segment
    that escaped the consent_gate macro): the check fails and audience_syncs never starts.

    (Engine feedback read after the last dbt build may already fail a few members: the
    mart is stale for them until the next build. The outsider comes on top of those.)"""
    before = consent_gate_check(warehouse=ops_resources["warehouse"]).metadata
    stale = before["failing_by_audience"].value
    with ops_warehouse.connect() as conn:
        audience = conn.execute(
            "select audience from marts.segment_catalog where purpose = 'marketing'"
            " order by audience limit 1"
        ).fetchone()[0]
        outsider = conn.execute(
            "select x.person_token from landing.person_xref x where not exists"
            " (select 1 from intermediate.int_consent_events e"
            "  where e.person_token = x.person_token and e.purpose = 'marketing'"
            "  and e.event_type = 'permit') order by 1 limit 1"
        ).fetchone()[0]
        conn.execute(
            "insert into marts.audience_membership (audience, person_token, purpose,"
            " consent_ref, evaluated_on) values (%s, %s, 'marketing', null, current_date)",
            (audience, outsider),
        )
        conn.commit()
        (runs_before,) = conn.execute("select count(*) from activation.sync_runs").fetchone()
    gated = dg.define_asset_job(
        "gated_sync",
        selection=dg.AssetSelection.keys("audience_syncs")
        | dg.AssetSelection.checks(consent_gate_check),
    )
    try:
        result = (
            dg.Definitions.merge(ops_defs, dg.Definitions(jobs=[gated]))
            .resolve_job_def("gated_sync")
            .execute_in_process(instance=instance, raise_on_error=False)
        )
    finally:
        with ops_warehouse.connect() as conn:
            conn.execute(
                "delete from marts.audience_membership where audience = %s and person_token = %s",
                (audience, outsider),
            )
            conn.commit()
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert metadata["members_failing"] == before["members_failing"].value + 1
    assert metadata["failing_by_audience"][audience] == stale.get(audience, 0) + 1
    assert outsider not in str(metadata)  # counts only, never a person token
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "audience_syncs" not in started
    with ops_warehouse.connect() as conn:
        (runs_after,) = conn.execute("select count(*) from activation.sync_runs").fetchone()
    assert runs_after == runs_before


def test_the_consent_gate_passes_on_a_freshly_built_mart(built):
    evaluations = {e.check_name: e for e in built.get_asset_check_evaluations()}
    assert evaluations["consent_gate"].passed
    assert evaluations["consent_gate"].metadata["members_checked"].value > 0


def test_sources_that_just_delivered_are_fresh(built):
    evaluations = {e.check_name: e for e in built.get_asset_check_evaluations()}
    for name in ("fhir_freshness", "hl7_freshness", "crm_freshness", "feedback_freshness"):
        assert evaluations[name].passed, name
        assert evaluations[name].metadata["age_hours"].value < 1


def test_a_quiet_source_warns_without_blocking(built, ops_resources, monkeypatch):
    monkeypatch.setenv("HUB_SOURCE_MAX_AGE_HOURS", "0.000001")
    check = next(c for c in freshness_checks if c.check_key.name == "hl7_freshness")
    evaluation = check(warehouse=ops_resources["warehouse"])
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "ask the sender" in evaluation.description

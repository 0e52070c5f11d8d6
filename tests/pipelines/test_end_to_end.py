"""The whole flow on a small generated population: every stage runs for real, in Dagster,
against the embedded PostgreSQL and the SANDBOX engine over HTTPS."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import dagster as dg
import pytest

from connectors.warehouse.database import Warehouse
from domain.consent import consent_state_on
from pipelines.definitions import build_definitions
from pipelines.resources import EmailEngineResource, InboundResource, WarehouseResource
from services.sync import consent_events_for, sync_audience

pytestmark = pytest.mark.slow

PATIENTS = 300


@pytest.fixture(scope="module")
def pipeline_run(warehouse: Warehouse, hub_state: Path, tmp_path_factory):
    from synthetic.generate import generate

    inbound = tmp_path_factory.mktemp("inbound")
    generate(inbound, patients=PATIENTS, seed=11)
    defs = build_definitions(
        {
            "warehouse": WarehouseResource(state_folder=str(hub_state)),
            "inbound": InboundResource(root=str(inbound)),
            "email_engine": EmailEngineResource(state_folder=str(hub_state)),
        }
    )
    job = defs.resolve_job_def("full_pipeline")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return defs, inbound, result


def _scalar(warehouse: Warehouse, sql: str, *params):
    with warehouse.connect() as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_every_source_loads_and_reconciles_with_quarantine_reasons(pipeline_run, warehouse):
    with warehouse.connect() as conn:
        rows = conn.execute(
            "select source, sum(records_read), sum(records_loaded), sum(records_quarantined)"
            " from landing.source_files group by source"
        ).fetchall()
        reasons = dict(
            conn.execute(
                "select source, array_agg(distinct reason) from quarantine.records group by 1"
            ).fetchall()
        )
    counts = {source: (read, loaded, quarantined) for source, read, loaded, quarantined in rows}
    assert set(counts) >= {"fhir", "hl7", "crm"}
    for source in ("fhir", "hl7", "crm"):
        read, loaded, quarantined = counts[source]
        assert loaded > 0 and quarantined > 0, source  # the generator plants bad records
        assert read == loaded + quarantined
    # Each kind of deliberately bad record lands in quarantine under its own reason code.
    assert {"NOT_JSON", "FHIR_NOT_A_RESOURCE", "FHIR_WRONG_VERSION", "BAD_DATE"} <= set(
        reasons["fhir"]
    )
    assert {"HL7_MISSING_MSH", "HL7_MISSING_PID"} <= set(reasons["hl7"])
    assert {"CRM_BAD_DATE", "CRM_MISSING_KEY", "CRM_BAD_BOOLEAN"} <= set(reasons["crm"])


def test_people_resolve_across_sources(pipeline_run, warehouse):
    persons = _scalar(warehouse, "select count(distinct person_token) from landing.person_xref")
    subjects = _scalar(warehouse, "select count(*) from landing.person_xref")
    assert 0 < persons < subjects  # FHIR, HL7 and CRM subjects merged into fewer people


def test_audiences_are_built_pushed_and_engagement_comes_back(pipeline_run, warehouse):
    members = _scalar(warehouse, "select count(*) from marts.audience_membership")
    pushed = _scalar(warehouse, "select count(*) from activation.sync_state")
    events = _scalar(warehouse, "select count(*) from engagement.events")
    modelled = _scalar(warehouse, "select count(*) from marts.fct_email_events")
    assert members > 0 and pushed > 0 and events > 0
    assert modelled == events


def test_every_pushed_marketing_contact_had_valid_consent(pipeline_run, warehouse):
    with warehouse.connect() as conn:
        rows = conn.execute(
            "select person_token, purpose, created_at from activation.ledger"
            " where operation in ('add', 'update') and status = 'acked'"
        ).fetchall()
        assert rows
        events = consent_events_for(conn, [person for person, _, _ in rows])
        # Engine feedback that arrived after a push (a bounce of that very send) did not
        # exist when the gate decided; judge each push on what was known then.
        received = dict(
            conn.execute("select event_id, received_at from engagement.suppressions").fetchall()
        )
    for person, purpose, pushed_at in rows:
        known = [
            e
            for e in events.get(person, [])
            if e.source_ref not in received or received[e.source_ref] < pushed_at
        ]
        assert consent_state_on(known, purpose, pushed_at.date()).allowed


def test_sync_refuses_a_member_without_consent_even_if_the_mart_lists_them(pipeline_run, warehouse):
    """A segment that bypassed the dbt gate still cannot push: the send step re-checks."""
    defs, _, _ = pipeline_run
    with warehouse.connect() as conn:
        audience = conn.execute(
            "select audience from marts.segment_catalog where purpose = 'marketing' limit 1"
        ).fetchone()[0]
        outsider = conn.execute(
            "select x.person_token from landing.person_xref x"
            " where not exists (select 1 from intermediate.int_consent_events e"
            "   where e.person_token = x.person_token and e.purpose = 'marketing'"
            "   and e.event_type = 'permit') limit 1"
        ).fetchone()[0]
        conn.execute(
            "insert into marts.audience_membership (audience, person_token, purpose,"
            " consent_ref, evaluated_on) values (%s, %s, 'marketing', null, current_date)",
            (audience, outsider),
        )
        conn.commit()
        engine_resource = EmailEngineResource(state_folder=str(warehouse.state_path))
        try:
            cipher = defs.resources["privacy"].vault_cipher()
            result = sync_audience(
                conn, engine_resource.engine(), cipher, destination="sandbox", audience=audience
            )
        finally:
            engine_resource.teardown_after_execution(None)
        pushed = conn.execute(
            "select count(*) from activation.ledger where person_token = %s and audience = %s",
            (outsider, audience),
        ).fetchone()[0]
        conn.execute(
            "delete from marts.audience_membership where person_token = %s"
            " and consent_ref is null and audience = %s",
            (outsider, audience),
        )
        conn.commit()
    assert pushed == 0
    assert result.excluded >= 1


def test_a_second_run_pushes_nothing_new(pipeline_run, warehouse):
    defs, _, _ = pipeline_run
    before = _scalar(warehouse, "select count(*) from activation.ledger")
    job = defs.resolve_job_def("full_pipeline")
    assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success
    with warehouse.connect() as conn:
        added = conn.execute(
            "select coalesce(sum(added + updated), 0) from activation.sync_runs"
            " where started_at = (select max(started_at) from activation.sync_runs)"
        ).fetchone()[0]
    assert added == 0
    # Only removals (engine feedback: unsubscribes, bounces) may have been written since.
    with warehouse.connect() as conn:
        new_upserts = conn.execute(
            "select count(*) from activation.ledger where ledger_id > %s and operation <> 'remove'",
            (before,),
        ).fetchone()[0]
    assert new_upserts == 0


def test_no_phi_outside_the_vault(pipeline_run, warehouse):
    """Canary scan: generated emails, names and birth dates appear in no table but vault."""
    _, inbound, _ = pipeline_run
    canaries: set[str] = set()
    with open(inbound / "crm" / "contacts.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            # A lone surname can be a legitimate category value ('White' is a race); the
            # full name, email, phone and birth date are what would identify a person.
            canaries.add(f"{row['first_name']} {row['last_name']}".strip())
            canaries.add(f"{row['last_name']}^{row['first_name']}".strip("^"))
            for column in ("email", "phone", "birth_date"):
                value = (row.get(column) or "").strip()
                # Birth dates of people born before 2000 cannot collide with the (recent)
                # clinical event dates the operational tier rightly keeps.
                if column == "birth_date" and not value.startswith("19"):
                    continue
                if len(value) >= 5:
                    canaries.add(value)
    assert len(canaries) > 100
    with warehouse.connect() as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_schema not in ('pg_catalog', 'information_schema', 'vault')"
            " and table_type = 'BASE TABLE'"
        ).fetchall()
        dumps = {
            f"{schema}.{table}": "\n".join(
                text for (text,) in conn.execute(f'select t::text from "{schema}"."{table}" t')
            )
            for schema, table in tables
        }

    def may_hold(name: str, canary: str) -> bool:
        # The operational tier keeps clinical event dates (a limited data set, by design),
        # and the public Synthea samples loaded in this session date back decades: a birth
        # date may coincide with someone's encounter date there. Everywhere else, no dates.
        is_date = canary[:4].isdigit() and canary[4:5] == "-"
        clinical = name.startswith(("landing.", "staging.", "intermediate.")) and not name.endswith(
            ("patients", "contacts", "persons")
        )
        return is_date and clinical

    leaks = {
        canary: where
        for canary in canaries
        if (where := [n for n, text in dumps.items() if canary in text and not may_hold(n, canary)])
    }
    assert not leaks, f"{len(leaks)} PHI values found outside the vault: {leaks}"


def test_cli_dry_run_previews_without_pushing(pipeline_run, warehouse):
    from typer.testing import CliRunner

    from pipelines.cli import app

    before = _scalar(warehouse, "select count(*) from activation.ledger")
    result = CliRunner().invoke(app, ["sync", "reengagement", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    preview = json.loads(result.output)
    assert preview["dry_run"] is True
    assert set(preview) >= {"added", "updated", "removed", "excluded", "rejected"}
    assert _scalar(warehouse, "select count(*) from activation.ledger") == before
    assert "@" not in result.output  # no email addresses in the preview

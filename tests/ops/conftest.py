"""Fixtures for operating the hub: a database of its own on the session's PostgreSQL, a small
generated population, the SANDBOX engine in a private folder, and the Dagster definitions
wired to them, with full_pipeline run once for every test here to build on."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from connectors.warehouse.database import Warehouse
from pipelines.definitions import build_definitions
from pipelines.notifications import AlertWebhookResource
from pipelines.resources import (
    EmailEngineResource,
    InboundResource,
    PrivacyResource,
    WarehouseResource,
)
from services.feedback import read_feedback
from services.ingest import ingest_uris
from services.journeys import load, run_journeys

PATIENTS = 300
SEED = 11
DIABETES, SURVEY = "diabetes_education", "post_visit_feedback"
# Journey ticks after the one full_pipeline ran: three weeks of logical time.
TICKS = [
    timedelta(days=3, hours=1),
    timedelta(days=7, hours=2),
    timedelta(days=11, hours=3),
    timedelta(days=18, hours=4),
]


@pytest.fixture(scope="session")
def ops_warehouse(warehouse: Warehouse) -> Warehouse:
    """A fresh database on the session's server (the other suites' data stays apart)."""
    name = f"ops_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(warehouse.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base = warehouse.url()
    path_start = base.index("/", base.index("//") + 2)
    query = base.find("?", path_start)
    url = base[:path_start] + "/" + name + (base[query:] if query >= 0 else "")
    isolated = Warehouse(database_url=url)
    isolated.ensure_schema()
    return isolated


@pytest.fixture(scope="session")
def ops_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this suite's SANDBOX engine keeps its state (its own event stream)."""
    return tmp_path_factory.mktemp("ops-state")


@pytest.fixture(scope="session")
def inbound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthetic.generate import generate

    folder = tmp_path_factory.mktemp("ops-inbound")
    generate(folder, patients=PATIENTS, seed=SEED)
    return folder


@pytest.fixture(scope="session")
def ops_resources(ops_warehouse: Warehouse, ops_state: Path, inbound: Path) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(database_url=ops_warehouse.url()),
        "inbound": InboundResource(root=str(inbound)),
        "email_engine": EmailEngineResource(state_folder=str(ops_state)),
        "alert_webhook": AlertWebhookResource(url=None),
    }


@pytest.fixture(scope="session")
def ops_defs(ops_resources: dict[str, object]) -> dg.Definitions:
    return build_definitions(ops_resources)


@pytest.fixture(scope="session")
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


@pytest.fixture(scope="session")
def built(ops_defs: dg.Definitions, instance: dg.DagsterInstance):
    """full_pipeline once: landing, persons, marts, audiences synced, feedback, journeys."""
    result = ops_defs.resolve_job_def("full_pipeline").execute_in_process(instance=instance)
    assert result.success
    return result


def fhir_patient_of(inbound: Path, conn, tokenizer) -> dict[str, str]:
    """person token -> a FHIR Patient id of theirs (tokens computed as ingest does)."""
    subjects = {}
    for line in (inbound / "fhir" / "Patient.000.ndjson").read_text().splitlines():
        try:
            resource = json.loads(line)
        except ValueError:
            continue  # the generator plants bad lines
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            subjects[tokenizer.subject_token("fhir", resource["id"])] = resource["id"]
    rows = conn.execute(
        "select subject_token, person_token from landing.person_xref where subject_token = any(%s)",
        (list(subjects),),
    ).fetchall()
    return {person: subjects[subject] for subject, person in rows}


def hba1c_result(patient_id: str, day: str) -> str:
    return json.dumps(
        {
            "resourceType": "Observation",
            "id": f"ops-test-hba1c-{patient_id}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": f"{day}T09:00:00Z",
            "valueQuantity": {"value": 6.8, "unit": "%", "system": "http://unitsofmeasure.org"},
        }
    )


@pytest.fixture(scope="session")
def journey_run(built, ops_defs, ops_warehouse, ops_resources, inbound, instance, tmp_path_factory):
    privacy = PrivacyResource()
    engine_resource = ops_resources["email_engine"]
    with ops_warehouse.connect() as conn:
        (start,) = conn.execute(
            "select min(entered_at) from journeys.positions where journey = %s", (DIABETES,)
        ).fetchone()
        waiting = [
            p
            for (p,) in conn.execute(
                "select person_token from journeys.positions where journey = %s"
                " and status = 'active' and step = 'after_welcome' order by person_token",
                (DIABETES,),
            )
        ]
        patients = fhir_patient_of(inbound, conn, privacy.tokenizer())
        assert len(waiting) >= 3, "the generated population should put people in the journey"
        lab_person = next(p for p in waiting if p in patients)
        revoked = next(p for p in waiting if p != lab_person)
        # A complaint arrives from the engine for one person...
        conn.execute(
            "insert into engagement.suppressions (event_id, destination, person_token,"
            " event_type, effective_at) values ('ops-journey-complaint', 'sandbox', %s,"
            " 'complaint', now())",
            (revoked,),
        )
        conn.commit()
        # ...and the HbA1c the journey asks for arrives from the EHR for another.
        drop = tmp_path_factory.mktemp("lab") / "Observation.lab.ndjson"
        drop.write_text(hba1c_result(patients[lab_person], start.date().isoformat()) + "\n")
        (loaded,) = ingest_uris(conn, [str(drop)], privacy.protector(), "fhir")
        assert loaded.loaded == 1
        # No dbt run in between: int_observations is a view, so the journey sees the lab now.

        journeys = load()
        ticks = []
        engine = engine_resource.engine()
        try:
            for offset in TICKS:
                read_feedback(conn, engine, engine_resource.destination)
                ticks += run_journeys(
                    conn,
                    engine,
                    privacy.vault_cipher(),
                    journeys,
                    destination=engine_resource.destination,
                    now=start + offset,
                )
        finally:
            engine_resource.teardown_after_execution(None)

    # The last tick through Dagster: events in, journeys advanced, marts and report rebuilt.
    report_path = tmp_path_factory.mktemp("report") / "campaign_report.html"
    result = ops_defs.resolve_job_def("journeys").execute_in_process(
        instance=instance,
        run_config={
            "ops": {
                "journey_tick": {"config": {"as_of": (start + timedelta(days=19)).isoformat()}},
                "campaign_report": {"config": {"path": str(report_path)}},
            }
        },
    )
    assert result.success
    return {
        "start": start,
        "revoked": revoked,
        "lab_person": lab_person,
        "ticks": ticks,
        "report": report_path,
        "result": result,
    }


def scalar(warehouse: Warehouse, sql: str, *params):
    with warehouse.connect() as conn:
        return conn.execute(sql, params).fetchone()[0]

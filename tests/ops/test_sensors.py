"""Each sensor evaluated in process against the suite's database and SANDBOX engine, and the
runs it asks for executed in process: new files, engine events, and the consent fast path
removing a revoked person within one tick."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from connectors.email.base import Member
from pipelines.resources import PrivacyResource
from pipelines.sensors import (
    consent_fast_path_sensor,
    engine_events_sensor,
    inbound_files_sensor,
)
from services.feedback import read_feedback
from tests.ops.conftest import fhir_patient_of

pytestmark = pytest.mark.slow


def evaluate(sensor, instance, resources, cursor=None):
    """One tick: (what the sensor returned, the cursor the next tick starts from)."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = sensor(context)
        if isinstance(result, dg.SensorResult) and result.cursor is not None:
            return result, result.cursor
        return result, context.cursor


def requests_of(result) -> list[dg.RunRequest]:
    if isinstance(result, dg.SensorResult):
        return list(result.run_requests or [])
    if isinstance(result, dg.RunRequest):
        return [result]
    return []


def run(ops_defs, instance, job_name: str, request: dg.RunRequest):
    job = ops_defs.resolve_job_def(job_name)
    return job.execute_in_process(
        instance=instance,
        run_config=request.run_config or None,
        partition_key=request.partition_key,
        tags=request.tags,
    )


def synced_treatment_member(warehouse, among: set[str] | None = None) -> tuple[str, str]:
    """An (audience, person) the engine holds for a treatment audience."""
    with warehouse.connect() as conn:
        rows = conn.execute(
            "select s.audience, s.person_token from activation.sync_state s"
            " join marts.segment_catalog c on c.audience = s.audience"
            " where c.purpose = 'treatment' and s.destination = 'sandbox'"
            " order by s.audience, s.person_token"
        ).fetchall()
    return next((a, p) for a, p in rows if among is None or p in among)


def audiences_holding(warehouse, person: str) -> list[str]:
    with warehouse.connect() as conn:
        return [
            a
            for (a,) in conn.execute(
                "select audience from activation.sync_state where person_token = %s", (person,)
            )
        ]


def engine_members(ops_resources, audience: str) -> set[str]:
    engine_resource = ops_resources["email_engine"]
    try:
        return set(engine_resource.engine().list_member_ids(audience))
    finally:
        engine_resource.teardown_after_execution(None)


# --- new files -------------------------------------------------------------------------------


def test_each_inbound_file_gets_its_own_partition_and_run(built, ops_defs, ops_resources, instance):
    resources = {"inbound": ops_resources["inbound"]}
    inbound: Path = Path(ops_resources["inbound"].root)
    files = [
        p
        for source in ("fhir", "hl7", "crm")
        for p in (inbound / source).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    ]

    result, _ = evaluate(inbound_files_sensor, instance, resources)
    requests = requests_of(result)
    assert sorted(r.partition_key for r in requests) == sorted(p.resolve().as_uri() for p in files)
    (added,) = result.dynamic_partitions_requests
    assert sorted(added.partition_keys) == sorted(r.partition_key for r in requests)
    instance.add_dynamic_partitions("inbound_files", list(added.partition_keys))

    # One file, alone: already loaded by full_pipeline, so it reconciles and is skipped.
    crm = next(r for r in requests if r.partition_key.endswith("contacts.csv"))
    run_result = run(ops_defs, instance, "ingest_file", crm)
    assert run_result.success
    (materialization,) = run_result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in materialization.materialization.metadata.items()}
    assert metadata["source"] == "crm" and metadata["skipped"] is True
    assert metadata["records_read"] == metadata["records_loaded"] + metadata["records_quarantined"]

    # Nothing changed: nothing to do. A new file: exactly one run, for it.
    quiet, cursor = evaluate(inbound_files_sensor, instance, resources, result.cursor)
    assert not requests_of(quiet)
    dropped = inbound / "crm" / "late_contacts.csv"
    header, first_row = (inbound / "crm" / "contacts.csv").read_text().splitlines()[:2]
    dropped.write_text(f"{header}\n{first_row}\n")
    try:
        again, _ = evaluate(inbound_files_sensor, instance, resources, cursor)
        (request,) = requests_of(again)
        assert request.partition_key == dropped.resolve().as_uri()
        instance.add_dynamic_partitions("inbound_files", [request.partition_key])
        late = run(ops_defs, instance, "ingest_file", request)
        (event,) = late.get_asset_materialization_events()
        assert event.materialization.metadata["records_read"].value == 1
    finally:
        dropped.unlink()


# --- engine events ---------------------------------------------------------------------------


def test_engine_events_sensor_reads_feedback_only_when_the_engine_has_news(
    built, ops_defs, ops_resources, ops_warehouse, instance
):
    engine_resource = ops_resources["email_engine"]
    resources = {"warehouse": ops_resources["warehouse"], "email_engine": engine_resource}
    engine = engine_resource.engine()
    try:
        with ops_warehouse.connect() as conn:
            read_feedback(conn, engine, engine_resource.destination)  # all caught up
            conn.commit()
    finally:
        engine_resource.teardown_after_execution(None)
    quiet, _ = evaluate(engine_events_sensor, instance, resources)
    assert isinstance(quiet, dg.SkipReason)
    # News: a send to a probe address makes the SANDBOX produce engagement events.
    engine = engine_resource.engine()
    try:
        engine.ensure_audience("ops-events-probe", "ops events probe", "treatment")
        member = Member(external_id="ops-probe-1", email="probe@example.org")
        engine.upsert("ops-events-probe", [member], idempotency_key="ops-events-probe-1")
    finally:
        engine_resource.teardown_after_execution(None)

    news, _ = evaluate(engine_events_sensor, instance, resources)
    (request,) = requests_of(news)
    assert request.tags["hub/destination"] == engine_resource.destination
    assert run(ops_defs, instance, "engagement_feedback", request).success
    with ops_warehouse.connect() as conn:
        (after,) = conn.execute(
            "select count(*) from engagement.events where audience = 'ops-events-probe'"
        ).fetchone()
    assert after > 0
    again, _ = evaluate(engine_events_sensor, instance, resources)
    assert isinstance(again, dg.SkipReason)


# --- consent fast path -----------------------------------------------------------------------


def test_an_unsubscribe_removes_the_person_from_every_audience_within_one_tick(
    built, ops_defs, ops_resources, ops_warehouse, instance
):
    resources = {"warehouse": ops_resources["warehouse"]}
    armed, cursor = evaluate(consent_fast_path_sensor, instance, resources)
    assert isinstance(armed, dg.SkipReason)

    audience, person = synced_treatment_member(ops_warehouse)
    holding = audiences_holding(ops_warehouse, person)
    assert person in engine_members(ops_resources, audience)
    with ops_warehouse.connect() as conn:
        # What the feedback step writes when the engine reports a complaint.
        conn.execute(
            "insert into engagement.suppressions (event_id, destination, person_token,"
            " event_type, effective_at) values ('ops-fast-path-1', 'sandbox', %s,"
            " 'complaint', now())",
            (person,),
        )
        conn.commit()

    tick, cursor = evaluate(consent_fast_path_sensor, instance, resources, cursor)
    (request,) = requests_of(tick)
    config = request.run_config["ops"]["audience_syncs"]["config"]
    assert sorted(config["audiences"]) == sorted(holding) and config["mode"] == "mirror"
    assert run(ops_defs, instance, "consent_fast_path", request).success

    assert audiences_holding(ops_warehouse, person) == []
    assert person not in engine_members(ops_resources, audience)
    with ops_warehouse.connect() as conn:
        removed = conn.execute(
            "select count(*) from activation.ledger where person_token = %s"
            " and operation = 'remove' and status = 'acked'",
            (person,),
        ).fetchone()[0]
    assert removed == len(holding)
    # The same revocation is not acted on twice.
    quiet, _ = evaluate(consent_fast_path_sensor, instance, resources, cursor)
    assert isinstance(quiet, dg.SkipReason)


def test_a_fhir_consent_denial_dropped_as_a_file_removes_the_person(
    built, ops_defs, ops_resources, ops_warehouse, inbound, instance
):
    """File sensor -> ingest_file -> consent sensor -> consent_fast_path, one tick each."""
    consent_resources = {"warehouse": ops_resources["warehouse"]}
    file_resources = {"inbound": ops_resources["inbound"]}
    _, consent_cursor = evaluate(consent_fast_path_sensor, instance, consent_resources)
    _, file_cursor = evaluate(inbound_files_sensor, instance, file_resources)

    with ops_warehouse.connect() as conn:
        patients = fhir_patient_of(inbound, conn, PrivacyResource().tokenizer())
    audience, person = synced_treatment_member(ops_warehouse, among=set(patients))
    holding = audiences_holding(ops_warehouse, person)
    today = datetime.now(UTC).date().isoformat()
    denial = {
        "resourceType": "Consent",
        "id": f"{patients[person]}-ct-withdrawn",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "treatment",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patients[person]}"},
        "dateTime": f"{today}T12:00:00Z",
        "policyRule": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentpolicycodes",
                    "code": "hipaa-npp",
                }
            ]
        },
        "provision": {
            "type": "deny",
            "period": {"start": today},
            "purpose": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
            ],
        },
    }
    dropped = inbound / "fhir" / "Consent.withdrawn.ndjson"
    dropped.write_text(json.dumps(denial) + "\n")
    try:
        files_tick, _ = evaluate(inbound_files_sensor, instance, file_resources, file_cursor)
        (ingest,) = requests_of(files_tick)
        instance.add_dynamic_partitions("inbound_files", [ingest.partition_key])
        assert run(ops_defs, instance, "ingest_file", ingest).success
    finally:
        dropped.unlink()

    tick, _ = evaluate(consent_fast_path_sensor, instance, consent_resources, consent_cursor)
    (request,) = requests_of(tick)
    assert set(holding) <= set(request.run_config["ops"]["audience_syncs"]["config"]["audiences"])
    assert run(ops_defs, instance, "consent_fast_path", request).success
    assert audiences_holding(ops_warehouse, person) == []
    assert person not in engine_members(ops_resources, audience)

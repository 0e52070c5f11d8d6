"""Sensors: new inbound files, new engine events, and the consent fast path.

- inbound_files_sensor: one dynamic partition per file under the inbound folder, and a run
  of ingest_file for each new or changed file (size and mtime tell), so a file is
  processed, and reprocessed, alone.
- engine_events_sensor: asks the engine for one event after the stored feedback cursor
  (a cheap call); when there is one, runs engagement_feedback, unless one is under way.
- consent_fast_path_sensor: new suppressions (unsubscribe, complaint, hard bounce) or newly
  landed denials (FHIR Consent deny/inactive/rejected, CRM revocation, opt-out,
  unsubscribe) for people who are synced somewhere request one consent_fast_path run for
  the audiences holding them, within the same tick. That run rebuilds the consent models,
  passes the blocking consent_gate check, and syncs those audiences in mirror mode: the
  send-time gate drops the person and the diff removes them at the engine.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg
import psycopg

from assets.file_drops import file_uri, inbound_files_partitions
from connectors.warehouse.database import Warehouse, state_dir
from pipelines.jobs import consent_fast_path_job, engagement_feedback_job, ingest_file_job
from pipelines.resources import EmailEngineResource, InboundResource, WarehouseResource
from services.ingest import SOURCES

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


# --- new files ---------------------------------------------------------------------------------


@dg.sensor(
    name="inbound_files_sensor",
    job=ingest_file_job,
    minimum_interval_seconds=60,
    description="A run per new or changed file in the inbound folder (one partition each).",
)
def inbound_files_sensor(
    context: dg.SensorEvaluationContext, inbound: InboundResource
) -> dg.SensorResult:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, str] = {}
    for source in SOURCES:
        for name in inbound.files(source):
            path = Path(name)
            stat = path.stat()
            current[file_uri(path)] = f"{stat.st_size}:{stat.st_mtime_ns}"
    changed = sorted(uri for uri, stamp in current.items() if seen.get(uri) != stamp)
    new_partitions = [
        uri
        for uri in changed
        if not context.instance.has_dynamic_partition(inbound_files_partitions.name, uri)
    ]
    requests = [
        dg.RunRequest(
            partition_key=uri,
            run_key=f"{uri}@{current[uri]}",
            tags={"hub/trigger": "inbound_file"},
        )
        for uri in changed
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[inbound_files_partitions.build_add_request(new_partitions)]
        if new_partitions
        else [],
        cursor=json.dumps(current, sort_keys=True),
        skip_reason=None if requests else dg.SkipReason("no new or changed inbound files"),
    )


# --- engine events -----------------------------------------------------------------------------


@dg.sensor(
    name="engine_events_sensor",
    job=engagement_feedback_job,
    minimum_interval_seconds=300,
    description="Reads engine feedback when the engine has events after the stored cursor.",
)
def engine_events_sensor(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    email_engine: EmailEngineResource,
):
    if _in_flight(context, engagement_feedback_job.name):
        return dg.SkipReason("a feedback read is already under way")
    with _connect(warehouse) as conn:
        row = conn.execute(
            "select cursor from engagement.cursors where destination = %s",
            (email_engine.destination,),
        ).fetchone()
    cursor = row[0] if row else None
    try:
        page = email_engine.engine().events(cursor, 1)
    finally:
        email_engine.teardown_after_execution(None)  # stops a SANDBOX engine it started
    if not page.events:
        return dg.SkipReason(f"no new events at {email_engine.destination}")
    # No run key: a failed read is simply requested again on a later tick (the in-flight
    # check above keeps two reads from overlapping).
    return dg.RunRequest(
        tags={"hub/trigger": "engine_events", "hub/destination": email_engine.destination}
    )


def _connect(warehouse: WarehouseResource):
    """A connection without re-applying the schema: a tick must stay cheap and must not
    queue DDL locks behind a long-running sync (the runs it starts apply the schema)."""
    state = Path(warehouse.state_folder).resolve() if warehouse.state_folder else state_dir()
    database = Warehouse(warehouse.database_url or None, state)
    conn = database.connect()
    applied = conn.execute(
        "select to_regclass('journeys.positions') is not null"
        " and to_regclass('landing.contacts') is not null"
    ).fetchone()[0]
    if not applied:  # a brand-new warehouse: the one tick that applies the schema
        conn.close()
        database.ensure_schema()
        conn = database.connect()
    return conn


def _in_flight(context: dg.SensorEvaluationContext, job_name: str) -> bool:
    runs = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1
    )
    return bool(runs)


# --- consent fast path -------------------------------------------------------------------------

# People with a new suppression or a newly landed denial, after the cursor position.
_NEW_SUPPRESSIONS = (
    "select person_token, received_at, event_id from engagement.suppressions"
    " where (received_at, event_id) > (%s::timestamptz, %s::text)"
    " order by received_at, event_id"
)
# (Subjects not yet resolved to a person are new people: synced nowhere yet.)
_NEW_DENIALS = (
    "select x.person_token from landing.consents l"
    " join landing.person_xref x on x.subject_token = l.subject_token"
    " where l.file_id > %(file_id)s and l.file_id <= %(latest)s"
    " and (lower(l.decision) = 'deny' or lower(l.status) in ('inactive', 'rejected'))"
    " union"
    " select x.person_token from landing.contacts l"
    " join landing.person_xref x on x.subject_token = l.subject_token"
    " where l.file_id > %(file_id)s and l.file_id <= %(latest)s"
    " and (l.marketing_auth_revoked is not null or l.unsubscribed_at is not null"
    "  or l.email_opt_in is false)"
)
_EPOCH = "1970-01-01T00:00:00+00:00"


@dg.sensor(
    name="consent_fast_path_sensor",
    job=consent_fast_path_job,
    minimum_interval_seconds=30,
    description="A revocation or unsubscribe triggers removal syncs for the affected audiences.",
)
def consent_fast_path_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    with _connect(warehouse) as conn:
        if not context.cursor:
            # First tick: start from now rather than replaying history (the nightly and
            # hourly syncs have already applied everything before it).
            context.update_cursor(json.dumps(_position_now(conn)))
            return dg.SkipReason("consent fast path armed; watching for revocations from now")
        position = json.loads(context.cursor)
        people: set[str] = set()
        suppressions = conn.execute(
            _NEW_SUPPRESSIONS, (position["received_at"], position["event_id"])
        ).fetchall()
        for person, received_at, event_id in suppressions:
            people.add(person)
            position["received_at"], position["event_id"] = received_at.isoformat(), event_id
        (latest,) = conn.execute(
            "select coalesce(max(file_id), 0) from landing.source_files"
        ).fetchone()
        denials = conn.execute(
            _NEW_DENIALS, {"file_id": position["file_id"], "latest": latest}
        ).fetchall()
        people.update(person for (person,) in denials)
        position["file_id"] = max(int(latest), int(position["file_id"]))
        audiences = _audiences_holding(conn, people) if people else []
    context.update_cursor(json.dumps(position))
    if not audiences:
        what = f"{len(people)} people with new revocations" if people else "no new revocations"
        return dg.SkipReason(f"{what}; none is synced to any audience")
    digest = hashlib.sha256(json.dumps(position, sort_keys=True).encode()).hexdigest()[:16]
    context.log.info(f"{len(people)} people revoked or unsubscribed; syncing {audiences}")
    return dg.RunRequest(
        run_key=f"consent:{digest}",
        run_config={
            "ops": {"audience_syncs": {"config": {"audiences": audiences, "mode": "mirror"}}}
        },
        tags={"hub/trigger": "consent", "hub/people": str(len(people))},
    )


def _audiences_holding(conn, people: set[str]) -> list[str]:
    """Segment audiences an engine holds any of `people` in (none before the first build)."""
    try:
        rows = conn.execute(
            "select distinct s.audience from activation.sync_state s"
            " join marts.segment_catalog c on c.audience = s.audience"
            " where s.person_token = any(%s) order by 1",
            (sorted(people),),
        ).fetchall()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return []
    return [audience for (audience,) in rows]


def _position_now(conn) -> dict[str, object]:
    received_at, event_id = conn.execute(
        "select max(received_at), max(event_id) from engagement.suppressions"
        " where received_at = (select max(received_at) from engagement.suppressions)"
    ).fetchone()
    (file_id,) = conn.execute(
        "select coalesce(max(file_id), 0) from landing.source_files"
    ).fetchone()
    return {
        "received_at": received_at.isoformat() if received_at else _EPOCH,
        "event_id": event_id or "",
        "file_id": int(file_id),
    }


operations_sensors = [inbound_files_sensor, engine_events_sensor, consent_fast_path_sensor]

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
from connectors.warehouse.commit_cursor import CommitCursor, cursor_now, read_since
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

# People with a newly landed denial in the given files (subjects not yet resolved to a
# person are new people: synced nowhere yet).
_NEW_DENIALS = (
    "select x.person_token from landing.consents l"
    " join landing.person_xref x on x.subject_token = l.subject_token"
    " where l.file_id = any(%(files)s)"
    " and (lower(l.decision) = 'deny' or lower(l.status) in ('inactive', 'rejected'))"
    " union"
    " select x.person_token from landing.contacts l"
    " join landing.person_xref x on x.subject_token = l.subject_token"
    " where l.file_id = any(%(files)s)"
    " and (l.marketing_auth_revoked is not null or l.unsubscribed_at is not null"
    "  or l.email_opt_in is false)"
)


@dg.sensor(
    name="consent_fast_path_sensor",
    job=consent_fast_path_job,
    minimum_interval_seconds=30,
    description="A revocation or unsubscribe triggers removal syncs for the affected audiences.",
)
def consent_fast_path_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    with _connect(warehouse) as conn:
        position = json.loads(context.cursor) if context.cursor else {}
        if set(position) != {"files", "suppressions"}:
            # First tick (or a cursor of an earlier version): start from now rather than
            # replaying history (the nightly and hourly syncs have applied everything before).
            position = {
                "files": cursor_now(conn, "landing.source_files").as_json(),
                "suppressions": cursor_now(conn, "engagement.suppressions").as_json(),
            }
            context.update_cursor(json.dumps(position))
            return dg.SkipReason("consent fast path armed; watching for revocations from now")
        # By the transactions that wrote them, not by file_id or received_at: rows can
        # commit out of that order (commit_cursor.py), and a cursor past them would miss them.
        suppressed, suppressions = read_since(
            conn,
            "engagement.suppressions",
            "person_token",
            CommitCursor.from_json(position["suppressions"]),
        )
        people: set[str] = {person for (person,) in suppressed}
        landed, files = read_since(
            conn, "landing.source_files", "file_id", CommitCursor.from_json(position["files"])
        )
        if landed:
            denials = conn.execute(_NEW_DENIALS, {"files": [f for (f,) in landed]}).fetchall()
            people.update(person for (person,) in denials)
        position = {"files": files.as_json(), "suppressions": suppressions.as_json()}
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


operations_sensors = [inbound_files_sensor, engine_events_sensor, consent_fast_path_sensor]

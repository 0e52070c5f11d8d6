"""The dbt project, built for real against a fresh embedded PostgreSQL with a hand-made dataset.

One `dbt build` per session (seeds, models, unit tests, data tests) on a small fixture that
covers every consent case and puts someone in each of the ten segments, then assertions on the
marts the send step and analysts read, a check that the SQL consent state equals
domain/consent.py on every person, purpose and day, an incremental re-run with late-arriving
rows, analyst grants, and documentation coverage.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from connectors.warehouse.changes import CHANGE_LOCK, advance_clock
from connectors.warehouse.database import Warehouse
from connectors.warehouse.embedded import stop_embedded
from domain.consent import PURPOSES, ConsentEvent, consent_state_on
from services.send_gate import events_from_json
from services.sync import _MEMBERSHIP_IS_UNIQUE as MEMBERSHIP_IS_UNIQUE

DBT_PROJECT = Path(__file__).resolve().parents[2] / "dbt_project"
EVALUATION_DATE = date(2025, 10, 15)  # flu season 2025/26 started 2025-08-01
D = EVALUATION_DATE
SEGMENTS = {
    "flu_vaccine_due": "treatment",
    "diabetes_hba1c_overdue": "treatment",
    "reengagement": "marketing",
    "breast_cancer_screening_due": "treatment",
    "post_procedure_recovery": "treatment",
    "missed_appointment": "treatment",
    "upcoming_appointment_reminder": "treatment",
    "birthday_month": "marketing",
    "non_openers_last_campaign": "marketing",
    "regional_health_alert": "treatment",
}
MARKETING_AUDIENCES = {a for a, p in SEGMENTS.items() if p == "marketing"}
ANALYST_ROLE = "hub_analyst"
# Marts the send step and analysts rely on: their column sets are enforced contracts.
CONTRACTED_MART_FOLDERS = ("persons", "audiences", "segments", "engagement")


def days_ago(n: int) -> date:
    return D - timedelta(days=n)


def ts(day: date, hour: int = 12) -> str:
    return f"{day.isoformat()} {hour:02d}:00:00+00"


# ---------------------------------------------------------------------------------------------
# Fixture dataset: people described by what makes them interesting.


@dataclass
class Person:
    name: str
    sources: tuple[str, ...] = ("fhir",)  # subjects: fhir / hl7 / crm, all one person
    birth_year: int = 1980
    birth_month: int = 6
    sex: str = "male"
    zip3: str | None = "021"
    deceased: bool = False
    # CRM consent columns (only when "crm" in sources)
    opt_in: bool | None = None
    auth_signed: date | None = None
    auth_expires: date | None = None
    auth_revoked: date | None = None
    unsubscribed: date | None = None
    # engine suppression (event_type, day)
    suppression: tuple[str, date] | None = None
    # FHIR consents: (status, purpose, decision, period_start, period_end)
    consents: tuple[tuple[str, str, str, date | None, date | None], ...] = ()
    # clinical facts
    last_encounter: date | None = None
    flu_vaccine: date | None = None
    diabetic: bool = False
    hba1c: date | None = None
    mammogram: date | None = None
    booked_visit: date | None = None
    no_shows: tuple[date, ...] = ()
    # other procedures: (SNOMED code, day)
    procedures: tuple[tuple[str, date], ...] = ()

    @property
    def token(self) -> str:
        return f"person-{self.name}"

    def subject(self, source: str) -> str:
        return f"subject-{source}-{self.name}"


LONG_AGO = days_ago(700)  # no visit in 18 months -> re-engagement candidate
MARKETING_OK = dict(
    sources=("fhir", "crm"),
    birth_month=D.month,  # birthday month: in seg_birthday_month before the gate
    opt_in=True,
    auth_signed=days_ago(100),
    auth_expires=D + timedelta(days=265),
    last_encounter=LONG_AGO,
)

PEOPLE = [
    Person("marketing-ok", **MARKETING_OK),
    Person(
        "fhir-marketing",
        sources=("fhir", "crm"),
        opt_in=True,
        last_encounter=LONG_AGO,
        consents=(("active", "marketing", "permit", days_ago(50), None),),
    ),
    Person(
        "expired", **{**MARKETING_OK, "auth_signed": days_ago(400), "auth_expires": days_ago(1)}
    ),
    Person("revoked", **{**MARKETING_OK, "auth_revoked": D}),
    Person("unsubscribed", **{**MARKETING_OK, "unsubscribed": days_ago(10)}),
    Person("hard-bounced", **MARKETING_OK, suppression=("hard_bounce", days_ago(5))),
    Person("complained", **MARKETING_OK, suppression=("complaint", days_ago(3))),
    Person("treatment-only", diabetic=True, hba1c=days_ago(240), last_encounter=LONG_AGO),
    Person(
        "treatment-denied",
        last_encounter=days_ago(30),
        consents=(("active", "treatment", "deny", days_ago(60), None),),
    ),
    Person("flu-done", sources=("hl7",), flu_vaccine=days_ago(30), last_encounter=days_ago(30)),
    Person(
        "diabetic-ok",
        diabetic=True,
        hba1c=days_ago(30),
        flu_vaccine=days_ago(20),
        last_encounter=days_ago(30),
    ),
    Person(
        "mammo-due",
        sex="female",
        birth_year=1965,
        zip3="036",
        flu_vaccine=days_ago(20),
        last_encounter=days_ago(30),
    ),
    Person(
        "mammo-done",
        sex="female",
        birth_year=1968,
        zip3="213",
        mammogram=days_ago(200),
        flu_vaccine=days_ago(20),
        last_encounter=days_ago(30),
    ),
    Person("nonagenarian", sex="female", birth_year=1934, birth_month=3, flu_vaccine=days_ago(20)),
    Person("eighty-nine", birth_year=1935, birth_month=12, flu_vaccine=days_ago(20)),
    Person("deceased", deceased=True, diabetic=True, last_encounter=LONG_AGO),
    Person("crm-only", sources=("crm",), opt_in=True, auth_signed=days_ago(10)),
    # Lapsed, but a visit is booked: not a re-engagement target.
    Person("booked", **{**MARKETING_OK, "booked_visit": D + timedelta(days=14)}),
    # Appendectomy 5 days ago: recovery follow-up. An x-ray 3 days ago needs none.
    Person("post-op", last_encounter=days_ago(5), procedures=(("80146002", days_ago(5)),)),
    Person("x-rayed", last_encounter=days_ago(3), procedures=(("399208008", days_ago(3)),)),
    # No-shows: 3 days ago (missed), 2 days ago but rebooked, 10 days ago (too old).
    Person("no-show", last_encounter=days_ago(200), no_shows=(days_ago(3),)),
    Person(
        "no-show-rebooked",
        last_encounter=days_ago(200),
        no_shows=(days_ago(2),),
        booked_visit=D + timedelta(days=10),
    ),
    Person("no-show-old", last_encounter=days_ago(200), no_shows=(days_ago(10),)),
    # Appointment in 2 days: reminder.
    Person("reminder", last_encounter=days_ago(90), booked_visit=D + timedelta(days=2)),
    # Lives in the default alert area (ZIP3 770).
    Person("houston", zip3="770", last_encounter=days_ago(60), flu_vaccine=days_ago(20)),
]
BY_NAME = {p.name: p for p in PEOPLE}


def load_fixture(conn: psycopg.Connection) -> None:
    """Insert the fixture dataset (landing, person_xref, engagement) into an empty hub."""
    file_ids = {}
    for source in ("fhir", "hl7", "crm"):
        file_ids[source] = conn.execute(
            "insert into landing.source_files (uri, source, size_bytes, sha256)"
            " values (%s, %s, 1, %s) returning file_id",
            (f"fixture://{source}", source, f"sha-{source}"),
        ).fetchone()[0]

    def insert(table: str, source: str, position: str, **values) -> None:
        columns = ["file_id", "source", "position", *values]
        # Landing keeps one row per natural key, a newer version replacing the older one in
        # place (connectors/warehouse/loader.py); patients are keyed by subject.
        upsert = (
            " on conflict (source, subject_token) do update set"
            + ", ".join(f" {c} = excluded.{c}" for c in columns if c not in ("source",))
            + ", loaded_at = now()"
            if table == "patients"
            else ""
        )
        conn.execute(
            f"insert into landing.{table} ({', '.join(columns)})"
            f" values ({', '.join(['%s'] * len(columns))}){upsert}",
            [file_ids[source], source, position, *values.values()],
        )

    for p in PEOPLE:
        for source in p.sources:
            conn.execute(
                "insert into landing.person_xref (subject_token, person_token) values (%s, %s)",
                (p.subject(source), p.token),
            )
        clinical = next((s for s in p.sources if s in ("fhir", "hl7")), None)
        for source in p.sources:
            if source == "crm":
                insert(
                    "contacts",
                    "crm",
                    f"{p.name}:contact",
                    subject_token=p.subject("crm"),
                    has_email=True,
                    birth_year=p.birth_year,
                    birth_month=p.birth_month,
                    zip3=p.zip3,
                    email_opt_in=p.opt_in,
                    marketing_auth_signed=p.auth_signed,
                    marketing_auth_expires=p.auth_expires,
                    marketing_auth_revoked=p.auth_revoked,
                    unsubscribed_at=ts(p.unsubscribed) if p.unsubscribed else None,
                    effective_at=ts(days_ago(40)),
                )
            else:
                # An older version first: the newer record must win the merge.
                insert(
                    "patients",
                    source,
                    f"{p.name}:patient:v1",
                    subject_token=p.subject(source),
                    source_id_token=f"pat-{p.name}",
                    birth_year=p.birth_year,
                    birth_month=p.birth_month,
                    sex="unknown",
                    has_email=True,
                    state="MA",
                    zip3="100",
                    language="en",
                    deceased=False,
                    effective_at=ts(days_ago(400)),
                )
                insert(
                    "patients",
                    source,
                    f"{p.name}:patient:v2",
                    subject_token=p.subject(source),
                    source_id_token=f"pat-{p.name}",
                    birth_year=p.birth_year,
                    birth_month=p.birth_month,
                    sex=p.sex,
                    has_email=True,
                    state="MA",
                    zip3=p.zip3,
                    language="en",
                    deceased=p.deceased,
                    effective_at=ts(days_ago(40)),
                )
        for i, (status, purpose, decision, start, end) in enumerate(p.consents):
            insert(
                "consents",
                "fhir",
                f"{p.name}:consent:{i}",
                subject_token=p.subject("fhir"),
                source_id_token=f"consent-{p.name}-{i}",
                status=status,
                purpose=purpose,
                decision=decision,
                period_start=start,
                period_end=end,
                recorded_at=ts(start or D),
                effective_at=ts(start or D),
            )
        if clinical is None:
            continue
        subject = p.subject(clinical)
        if p.last_encounter:
            for i, day in enumerate((p.last_encounter - timedelta(days=365), p.last_encounter)):
                insert(
                    "encounters",
                    clinical,
                    f"{p.name}:enc:{i}",
                    subject_token=subject,
                    source_id_token=f"enc-{p.name}-{i}",
                    status="finished",
                    class_code="AMB",
                    start_at=ts(day, 9),
                    end_at=ts(day, 10),
                    effective_at=ts(day, 11),
                )
        if p.flu_vaccine:
            # Last season's shot does not count for this season.
            for i, day in enumerate((p.flu_vaccine - timedelta(days=365), p.flu_vaccine)):
                insert(
                    "immunizations",
                    clinical,
                    f"{p.name}:imm:{i}",
                    subject_token=subject,
                    source_id_token=f"imm-{p.name}-{i}",
                    status="completed",
                    code_system="cvx" if clinical == "fhir" else "CVX",
                    code="150",
                    occurrence_date=day,
                    effective_at=ts(day),
                )
        if p.diabetic:
            insert(
                "conditions",
                clinical,
                f"{p.name}:cond",
                subject_token=subject,
                source_id_token=f"cond-{p.name}",
                code_system="snomed",
                code="44054006",
                clinical_status="active",
                onset_date=days_ago(2000),
                effective_at=ts(days_ago(900)),
            )
        if p.hba1c:
            insert(
                "observations",
                clinical,
                f"{p.name}:obs",
                subject_token=subject,
                source_id_token=f"obs-{p.name}",
                status="final",
                code_system="loinc",
                code="4548-4",
                value_number=7.9,
                unit="%",
                effective_at_clinical=ts(p.hba1c),
                effective_at=ts(p.hba1c),
            )
        if p.booked_visit:
            insert(
                "appointments",
                clinical,
                f"{p.name}:appt",
                subject_token=subject,
                source_id_token=f"appt-{p.name}",
                status="booked",
                service_code="primary-care",
                start_at=ts(p.booked_visit),
                effective_at=ts(days_ago(2)),
            )
        for i, day in enumerate(p.no_shows):
            insert(
                "appointments",
                clinical,
                f"{p.name}:noshow:{i}",
                subject_token=subject,
                source_id_token=f"noshow-{p.name}-{i}",
                status="noshow",
                service_code="primary-care",
                start_at=ts(day, 9),
                effective_at=ts(day, 18),
            )
        for i, (code, day) in enumerate(p.procedures):
            insert(
                "procedures",
                clinical,
                f"{p.name}:proc:{i}",
                subject_token=subject,
                source_id_token=f"proc-{p.name}-{i}",
                status="completed",
                code_system="http://snomed.info/sct",
                code=code,
                performed_date=day,
                effective_at=ts(day),
            )
        if p.mammogram:
            insert(
                "procedures",
                clinical,
                f"{p.name}:proc",
                subject_token=subject,
                source_id_token=f"proc-{p.name}",
                status="completed",
                code_system="snomed",
                code="24623002",
                performed_date=p.mammogram,
                effective_at=ts(p.mammogram),
            )
    # A flu shot recorded in error does not count.
    insert(
        "immunizations",
        "fhir",
        "treatment-only:imm:error",
        subject_token=BY_NAME["treatment-only"].subject("fhir"),
        source_id_token="imm-error",
        status="entered-in-error",
        code_system="cvx",
        code="150",
        occurrence_date=days_ago(5),
        effective_at=ts(days_ago(5)),
    )
    for n, p in enumerate(p for p in PEOPLE if p.suppression):
        event_type, day = p.suppression
        conn.execute(
            "insert into engagement.suppressions (event_id, destination, person_token,"
            " event_type, effective_at) values (%s, 'sandbox', %s, %s, %s)",
            (f"supp-{n}", p.token, event_type, ts(day)),
        )
    for event in ENGAGEMENT_EVENTS:
        insert_event(conn, *event)


def insert_event(
    conn: psycopg.Connection,
    event_id: str,
    audience: str,
    person: str,
    event_type: str,
    day: date,
    machine: bool = False,
    bounce: str | None = None,
    domain: str | None = "example.org",
    hour: int = 12,
) -> None:
    conn.execute(
        "insert into engagement.events (event_id, destination, audience, person_token,"
        " event_type, occurred_at, machine_open, bounce_type, recipient_domain)"
        " values (%s, 'sandbox', %s, %s, %s, %s, %s, %s, %s)",
        (
            event_id,
            audience,
            f"person-{person}",
            event_type,
            ts(day, hour),
            machine,
            bounce,
            domain,
        ),
    )


def _campaign(audience: str, day: date, outcomes: dict[str, tuple[str, ...]]) -> list[tuple]:
    """Engine events of one campaign send: per person, the events after 'sent'."""
    events = []
    for person, kinds in outcomes.items():
        for n, kind in enumerate(("sent", *kinds)):
            event_type, _, flag = kind.partition(":")
            events.append(
                (
                    f"{audience}-{day}-{person}-{n}",
                    audience,
                    person,
                    event_type,
                    day,
                    flag == "machine",
                    (flag or None) if event_type == "bounce" else None,
                    "example.com" if person.startswith("m") else "example.org",
                    9 + n,
                )
            )
    return events


# Engagement history. Yesterday's re-engagement send is too recent to judge (non-opener wait: 3
# days); the flu campaign 5 days ago is the last campaign; the one 10 days before is older.
ENGAGEMENT_EVENTS = [
    ("e1", "reengagement", "marketing-ok", "sent", days_ago(1)),
    ("e2", "reengagement", "marketing-ok", "delivered", days_ago(1)),
    ("e3", "reengagement", "marketing-ok", "open", days_ago(1), True),
    ("e4", "reengagement", "marketing-ok", "open", days_ago(1)),
    ("e5", "reengagement", "marketing-ok", "click", days_ago(1)),
    ("e6", "reengagement", "fhir-marketing", "sent", days_ago(1)),
    ("e7", "reengagement", "fhir-marketing", "delivered", days_ago(1)),
    *_campaign(
        "flu_vaccine_due",
        days_ago(5),
        {
            "marketing-ok": ("delivered", "open:machine"),  # a proxy prefetch is no open
            "fhir-marketing": ("delivered", "open"),
            "expired": ("delivered",),
            "revoked": ("delivered",),
            "unsubscribed": ("delivered",),
            "hard-bounced": ("delivered",),
            "complained": ("delivered",),
            "booked": ("bounce:hard",),  # never delivered: nothing to follow up
        },
    ),
    *_campaign("breast_cancer_screening_due", days_ago(15), {"crm-only": ("delivered",)}),
]
NON_OPENERS = {"marketing-ok", "expired", "revoked", "unsubscribed", "hard-bounced", "complained"}


# ---------------------------------------------------------------------------------------------
# Fixtures: a fresh embedded PostgreSQL, the dataset, one dbt build.


@contextmanager
def dbt_environment(warehouse: Warehouse) -> Iterator[None]:
    env = {**warehouse.dbt_env(), "DO_NOT_TRACK": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_dbt(tmp: Path, *args: str):
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(
        [
            *args,
            "--project-dir",
            str(DBT_PROJECT),
            "--profiles-dir",
            str(DBT_PROJECT),
            "--target-path",
            str(tmp / "target"),
            "--log-path",
            str(tmp / "logs"),
        ]
    )
    return result


@dataclass
class Built:
    warehouse: Warehouse
    tmp: Path
    build: object

    def rows(self, sql: str, params=()) -> list[tuple]:
        with self.warehouse.connect() as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    tmp = tmp_path_factory.mktemp("dbt-project")
    warehouse = Warehouse(database_url=None, state_path=tmp / "state")
    warehouse.ensure_schema()
    with warehouse.connect() as conn:
        # The role may already come with the warehouse's schema; dbt must grant to it either way.
        if not conn.execute(
            "select 1 from pg_roles where rolname = %s", (ANALYST_ROLE,)
        ).fetchone():
            conn.execute(f"create role {ANALYST_ROLE} nologin")
        load_fixture(conn)
    try:
        with dbt_environment(warehouse):
            build = run_dbt(tmp, "build", "--vars", f"{{evaluation_date: '{EVALUATION_DATE}'}}")
        yield Built(warehouse, tmp, build)
    finally:
        # Stop it while its folder is still ours (at interpreter exit pytest may have locked it).
        stop_embedded(tmp / "state" / "pg")


def members(built: Built, audience: str) -> set[str]:
    return {
        person
        for (person,) in built.rows(
            "select person_token from marts.audience_membership where audience = %s", (audience,)
        )
    }


def tokens(*names: str) -> set[str]:
    return {f"person-{n}" for n in names}


# ---------------------------------------------------------------------------------------------
# Tests


def test_build_succeeds(built: Built) -> None:
    failures = (
        [
            f"{r.node.unique_id}: {r.status} {r.message}"
            for r in built.build.result.results
            if str(r.status) not in ("success", "pass")
        ]
        if built.build.result
        else [str(built.build.exception)]
    )
    assert built.build.success, failures
    kinds = Counter(r.node.resource_type for r in built.build.result.results)
    # consent (5), journey stage, flu season and non-opener unit tests ran and passed
    assert kinds["unit_test"] >= 9


def segment(built: Built, audience: str) -> set[str]:
    return {person for (person,) in built.rows(f"select person_token from marts.seg_{audience}")}


def test_every_segment_is_non_empty_and_catalogued(built: Built) -> None:
    catalog = {
        audience: (purpose, fields, owner, description)
        for audience, purpose, fields, owner, description in built.rows(
            "select audience, purpose, personalization_fields, owner, description"
            " from marts.segment_catalog"
        )
    }
    assert {a: p for a, (p, *_) in catalog.items()} == SEGMENTS
    for audience, (_, fields, owner, description) in catalog.items():
        assert fields == ["given_name"] and owner and description, audience
        assert segment(built, audience), audience
        assert members(built, audience), audience


def test_segments_pick_exactly_the_people_they_describe(built: Built) -> None:
    assert segment(built, "post_procedure_recovery") == tokens("post-op")
    assert segment(built, "missed_appointment") == tokens("no-show")
    assert segment(built, "upcoming_appointment_reminder") == tokens("reminder")
    assert segment(built, "regional_health_alert") == tokens("houston")
    assert segment(built, "non_openers_last_campaign") == tokens(*NON_OPENERS)
    birthdays = {p.name for p in PEOPLE if p.birth_month == D.month and not p.deceased}
    assert segment(built, "birthday_month") == tokens(*birthdays)
    assert "houston" not in segment(built, "flu_vaccine_due")  # vaccinated this season


def test_marketing_audiences_keep_only_valid_authorizations(built: Built) -> None:
    assert members(built, "reengagement") == tokens("marketing-ok", "fhir-marketing")
    assert members(built, "non_openers_last_campaign") == tokens("marketing-ok")
    # expired yesterday, revoked this morning, unsubscribed, hard-bounced, complained: each is
    # in every marketing segment and in no marketing audience.
    gated_out = tokens("expired", "revoked", "unsubscribed", "hard-bounced", "complained")
    assert BY_NAME["expired"].auth_expires == days_ago(1)
    assert BY_NAME["revoked"].auth_revoked == D
    for audience in MARKETING_AUDIENCES:
        assert gated_out <= segment(built, audience), audience
        assert not members(built, audience) & gated_out, audience
        assert not members(built, audience) & tokens("treatment-only", "crm-only"), audience
    refs = dict(
        built.rows(
            "select person_token, consent_ref from marts.audience_membership"
            " where audience = 'reengagement'"
        )
    )
    assert refs == {
        "person-marketing-ok": "subject-crm-marketing-ok",
        "person-fhir-marketing": "consent-fhir-marketing-0",
    }


def test_treatment_audiences_reach_people_without_marketing_authorization(built: Built) -> None:
    flu = members(built, "flu_vaccine_due")
    assert tokens("treatment-only", "unsubscribed", "expired", "revoked") <= flu
    assert not flu & tokens("hard-bounced", "complained", "treatment-denied")
    assert not flu & tokens("flu-done", "diabetic-ok", "deceased", "crm-only", "nonagenarian")
    assert members(built, "diabetes_hba1c_overdue") == tokens("treatment-only")
    assert members(built, "breast_cancer_screening_due") == tokens("mammo-due")
    suppressed = tokens("hard-bounced", "complained")
    treatment = {a for a, p in SEGMENTS.items() if p == "treatment"}
    for audience in treatment:
        assert not members(built, audience) & suppressed, audience


def test_audience_exclusions_count_each_reason(built: Built) -> None:
    exclusions: dict[str, dict[str, int]] = defaultdict(dict)
    for audience, reason, persons in built.rows(
        "select audience, reason, persons from marts.audience_exclusions"
    ):
        exclusions[audience][reason] = persons
    assert exclusions["reengagement"] == {
        "expired": 1,
        "revoked": 1,
        "unsubscribed": 1,
        "hard_bounced": 1,
        "complained": 1,
        "not_opted_in": 1,
    }
    assert exclusions["non_openers_last_campaign"] == {
        "expired": 1,
        "revoked": 1,
        "unsubscribed": 1,
        "hard_bounced": 1,
        "complained": 1,
    }
    assert exclusions["flu_vaccine_due"] == {"hard_bounced": 1, "complained": 1, "denied": 1}
    assert "diabetes_hba1c_overdue" not in exclusions


def test_consent_history_explains_in_and_out_on_any_date(built: Built) -> None:
    history = built.rows(
        "select valid_from, valid_to, allowed, reason, consent_ref"
        " from intermediate.int_consent_history"
        " where person_token = 'person-revoked' and purpose = 'marketing'"
    )

    def state_on(day: date) -> tuple[bool, str, str | None]:
        (state,) = [
            (allowed, reason, ref)
            for start, end, allowed, reason, ref in history
            if start <= day and (end is None or day <= end)
        ]
        return state

    assert state_on(days_ago(60)) == (False, "not_opted_in", None)  # signed, not yet opted in
    assert state_on(days_ago(1)) == (True, "ok", "subject-crm-revoked")
    assert state_on(D) == (False, "revoked", "subject-crm-revoked")  # revoked this morning
    assert state_on(D + timedelta(days=400)) == (False, "revoked", "subject-crm-revoked")


def test_dim_persons_is_safe_harbor(built: Built) -> None:
    columns = [
        c
        for (c,) in built.rows(
            "select column_name from information_schema.columns"
            " where table_schema = 'marts' and table_name = 'dim_persons' order by ordinal_position"
        )
    ]
    assert columns == [
        "person_token",
        "birth_year",
        "age_band",
        "sex",
        "zip3",
        "state",
        "language",
        "coverage_type",
        "journey_stage",
    ]
    rows = {
        r[0]: r[1:]
        for r in built.rows(
            "select person_token, birth_year, age_band, zip3, sex from marts.dim_persons"
        )
    }
    assert rows["person-nonagenarian"][:2] == (None, "90+")  # 91 on the day
    assert rows["person-eighty-nine"][:2] == (None, "75-89")  # 89: the year alone could say 90
    assert rows["person-mammo-due"] == (1965, "50-64", "000", "female")  # 036: restricted
    assert rows["person-mammo-done"][2] == "000"  # 213: not in the census table
    assert rows["person-marketing-ok"][2] == "021"  # populous: kept
    assert rows["person-crm-only"][3] is None  # CRM carries no sex


def test_journey_stage_of_fixture_patients(built: Built) -> None:
    stages = dict(built.rows("select person_token, journey_stage from marts.dim_persons"))
    assert stages["person-treatment-only"] == "inactive"  # last visit 700 days ago
    assert stages["person-post-op"] == "active"  # seen 5 days ago, no gap
    assert stages["person-no-show"] == "at_risk"
    assert stages["person-mammo-due"] == "overdue"  # screening mammogram due
    assert stages["person-diabetic-ok"] == "active"
    assert stages["person-crm-only"] is None  # no care journey
    assert stages["person-deceased"] is None


def test_clinical_facts_by_code(built: Built) -> None:
    assert built.rows(
        "select code_system, code, code_sets from intermediate.int_conditions_active"
        " where person_token = 'person-treatment-only'"
    ) == [("snomed", "44054006", ["diabetes"])]
    assert built.rows(
        "select loinc_code, value_number, unit, last_observed_on from intermediate.int_labs_latest"
        " where person_token = 'person-treatment-only'"
    ) == [("4548-4", 7.9, "%", days_ago(240))]
    assert built.rows(
        "select cvx_code, doses, last_given_on from intermediate.int_immunizations_latest"
        " where person_token = 'person-diabetic-ok'"
    ) == [("150", 2, days_ago(20))]
    utilization = built.rows(
        "select last_visit_on, last_no_show_on, no_shows_90d, next_appointment_on"
        " from intermediate.int_utilization where person_token = 'person-no-show-rebooked'"
    )
    assert utilization == [(days_ago(200), days_ago(2), 1, D + timedelta(days=10))]


def test_sql_consent_state_matches_domain_consent(built: Built) -> None:
    """int_consent_state and int_consent_history agree with domain.consent on every case."""
    events: dict[str, list[ConsentEvent]] = defaultdict(list)
    for person, purpose, event_type, effective_on, expires_on, source_ref in built.rows(
        "select person_token, purpose, event_type, effective_on, expires_on, source_ref"
        " from intermediate.int_consent_events"
    ):
        events[person].append(
            ConsentEvent(event_type, effective_on, purpose, expires_on, source_ref)
        )
    state = built.rows(
        "select person_token, purpose, evaluated_on, allowed, reason, consent_ref"
        " from intermediate.int_consent_state"
    )
    assert len(state) == len({r[0] for r in state}) * len(PURPOSES)
    for person, purpose, evaluated_on, allowed, reason, consent_ref in state:
        assert evaluated_on == EVALUATION_DATE
        decision = consent_state_on(events.get(person, []), purpose, evaluated_on)
        assert (allowed, reason, consent_ref) == (
            decision.allowed,
            decision.reason,
            decision.source_ref,
        ), (person, purpose)
    history = built.rows(
        "select person_token, purpose, valid_from, valid_to, allowed, reason, consent_ref"
        " from intermediate.int_consent_history"
    )
    assert history
    for person, purpose, valid_from, valid_to, allowed, reason, consent_ref in history:
        for day in {valid_from, valid_to or valid_from}:
            decision = consent_state_on(events[person], purpose, day)
            assert (allowed, reason, consent_ref) == (
                decision.allowed,
                decision.reason,
                decision.source_ref,
            ), (person, purpose, day)


def test_consent_digests_cover_every_person_and_follow_their_events(built: Built) -> None:
    """int_consent_digests: one per person with consent events, counting them, and different
    for people whose events differ (the send step skips people whose digest is unchanged)."""
    counts = dict(
        built.rows("select person_token, count(*) from intermediate.int_consent_events group by 1")
    )
    digests = dict(
        built.rows("select person_token, events_digest from intermediate.int_consent_digests")
    )
    assert counts and digests.keys() == counts.keys()
    assert all(int(digests[p].split(":")[0]) == n for p, n in counts.items())
    events = defaultdict(set)
    for person, *event in built.rows(
        "select person_token, purpose, event_type, effective_on, expires_on, source_ref"
        " from intermediate.int_consent_events"
    ):
        events[person].add(tuple(event))
    digest_of_events: dict[frozenset, set[str]] = defaultdict(set)
    for person, rows in events.items():
        digest_of_events[frozenset(rows)].add(digests[person])
    assert all(len(found) == 1 for found in digest_of_events.values())
    assert len(set(digests.values())) == len(digest_of_events)


def test_consent_digests_keep_each_persons_events_as_the_send_gate_reads_them(
    built: Built,
) -> None:
    """int_consent_digests.events: every event of the person, ordered by its columns (nulls
    last), in the shape services.send_gate.events_from_json reads (the send step's member
    query takes them from here)."""
    events = defaultdict(list)
    for person, *event in built.rows(
        "select person_token, event_type, effective_on, purpose, expires_on, source_ref"
        " from intermediate.int_consent_events"
    ):
        events[person].append(ConsentEvent(*event))
    kept = dict(built.rows("select person_token, events from intermediate.int_consent_digests"))
    assert kept.keys() == events.keys()

    def order(e: ConsentEvent) -> tuple:
        return (
            e.effective_on,
            e.event_type,
            (e.purpose is None, e.purpose or ""),
            (e.expires_on is None, e.expires_on or date.min),
            (e.source_ref is None, e.source_ref or ""),
        )

    assert {p: events_from_json(kept[p]) for p in kept} == {
        p: sorted(rows, key=order) for p, rows in events.items()
    }


def test_membership_is_unique_as_the_send_step_expects(built: Built) -> None:
    """The send step reads members as dbt wrote them when a unique index makes each member
    appear once per audience (services/sync.py); without it, it drops duplicates itself."""
    assert built.rows(MEMBERSHIP_IS_UNIQUE) == [(True,)]


def test_a_rebuild_rewrites_and_stamps_only_the_consent_digests_that_changed(
    built: Built,
) -> None:
    """int_consent_digests is incremental: a rebuild writes only the digests that differ,
    stamped with the change clock's epoch (the send step re-reads only those people), under
    the lock class connectors.warehouse.changes uses."""
    macros = (DBT_PROJECT / "macros" / "change_clock.sql").read_text()
    assert f"\n    {CHANGE_LOCK}\n" in macros
    person, consent = "person-fhir-marketing", "consent-fhir-marketing-0"

    def digests() -> dict[str, tuple[str, int]]:
        return {
            p: (d, e)
            for p, d, e in built.rows(
                "select person_token, events_digest, change_epoch"
                " from intermediate.int_consent_digests"
            )
        }

    def rebuild_after(change: str | None) -> dict[str, tuple[str, int]]:
        with built.warehouse.connect() as conn:
            if change:
                conn.execute(change, (consent,))
            assert advance_clock(conn) is not None
        with dbt_environment(built.warehouse):
            result = run_dbt(
                built.tmp,
                "run",
                "--select",
                "int_consent_events int_consent_digests",
                "--vars",
                f"{{evaluation_date: '{EVALUATION_DATE}', analyst_role: no_such_role}}",
            )
        assert result.success, result.exception
        return digests()

    before = digests()
    assert rebuild_after(None) == before  # nothing changed, nothing rewritten
    extended = rebuild_after(
        "update landing.consents set period_end = current_date + 400 where source_id_token = %s"
    )
    assert {p for p in extended if extended[p] != before[p]} == {person}
    assert extended[person][1] > before[person][1]
    restored = rebuild_after(
        "update landing.consents set period_end = null where source_id_token = %s"
    )
    assert {p for p in restored if restored[p] != extended[p]} == {person}
    assert restored[person] == (before[person][0], restored[person][1])
    assert restored[person][1] > extended[person][1]
    # A row kept from before the digests carried the events gets them at the next build.
    with built.warehouse.connect() as conn:
        conn.execute(
            "update intermediate.int_consent_digests set events = null where person_token = %s",
            (person,),
        )
    backfilled = rebuild_after(None)
    assert {p for p in backfilled if backfilled[p] != restored[p]} == {person}
    assert built.rows(
        "select events is not null and events <> '[]' from intermediate.int_consent_digests"
        " where person_token = %s",
        (person,),
    ) == [(True,)]


def test_an_incremental_build_recomputes_only_the_consent_histories_that_changed(
    built: Built,
) -> None:
    """int_consent_history is incremental by person: a build rewrites the people whose
    events changed (or whose rows came from other code: a digest that no longer matches),
    drops people left without events, leaves everyone else's rows alone, and ends equal to
    a build from scratch."""
    changed, stale, consent = "person-fhir-marketing", "person-revoked", "consent-fhir-marketing-0"
    columns = "purpose, valid_from, valid_to, allowed, reason, consent_ref, events_digest"

    def history() -> dict[str, tuple[list[tuple], set[str]]]:
        """person -> (their rows, the transactions that wrote them)"""
        found: dict[str, tuple[list[tuple], set[str]]] = defaultdict(lambda: ([], set()))
        for person, written_by, *row in built.rows(
            f"select person_token, xmin::text, {columns} from intermediate.int_consent_history"
        ):
            found[person][0].append(tuple(row))
            found[person][1].add(written_by)
        return {p: (sorted(rows, key=str), xids) for p, (rows, xids) in found.items()}

    def build(*args: str) -> dict[str, tuple[list[tuple], set[str]]]:
        with dbt_environment(built.warehouse):
            result = run_dbt(
                built.tmp,
                "run",
                "--select",
                "int_consent_events int_consent_history",
                *args,
                "--vars",
                f"{{evaluation_date: '{EVALUATION_DATE}', analyst_role: no_such_role}}",
            )
        assert result.success, result.exception
        return history()

    def values(found: dict[str, tuple[list[tuple], set[str]]]) -> dict[str, list[tuple]]:
        return {p: rows for p, (rows, _) in found.items()}

    before = history()
    assert changed in before and stale in before
    with built.warehouse.connect() as conn:
        conn.execute(
            "update landing.consents set period_end = current_date + 400"
            " where source_id_token = %s",
            (consent,),
        )
        conn.execute(
            "update intermediate.int_consent_history set events_digest = 'other code'"
            " where person_token = %s",
            (stale,),
        )
        conn.execute(
            f"insert into intermediate.int_consent_history (person_token, channel, {columns})"
            " select 'person-without-events', channel, " + columns +
            " from intermediate.int_consent_history where person_token = %s",
            (stale,),
        )  # fmt: skip
    after = build()
    assert "person-without-events" not in after
    assert after[changed][0] != before[changed][0]
    assert after[stale][0] == before[stale][0] and after[stale][1].isdisjoint(before[stale][1])
    untouched = set(before) - {changed, stale}
    assert untouched and all(after[p] == before[p] for p in untouched)
    assert values(build("--full-refresh")) == values(after)
    with built.warehouse.connect() as conn:
        conn.execute(
            "update landing.consents set period_end = null where source_id_token = %s",
            (consent,),
        )
    assert values(build()) == values(before)


def test_an_incremental_model_waits_for_a_build_of_it_in_progress(built: Built) -> None:
    """Builds of a delete+insert model take turns (one_build_at_a_time): side by side, each
    would delete the rows they rewrite and each insert them again."""
    lock = "select pg_advisory_xact_lock(hashtext('audience_hub.intermediate.int_consent_history'))"
    waiting = (
        "select count(*) from pg_locks where locktype = 'advisory' and not granted"
        " and database = (select oid from pg_database where datname = current_database())"
    )
    with built.warehouse.connect() as holder, built.warehouse.connect() as watcher:
        watcher.autocommit = True
        holder.execute(lock)  # a build in progress, as far as the next one can tell
        outcome: list = []
        with dbt_environment(built.warehouse):
            second = threading.Thread(
                target=lambda: outcome.append(
                    run_dbt(
                        built.tmp,
                        "run",
                        "--select",
                        "int_consent_history",
                        "--vars",
                        f"{{evaluation_date: '{EVALUATION_DATE}', analyst_role: no_such_role}}",
                    )
                )
            )
            second.start()
            deadline = time.monotonic() + 60
            while watcher.execute(waiting).fetchone()[0] == 0 and second.is_alive():
                assert time.monotonic() < deadline, "the second build never reached the lock"
                time.sleep(0.05)
            assert second.is_alive() and not outcome  # it waits ...
            holder.commit()  # ... until the first one ends
            second.join(120)
    assert outcome and outcome[0].success, outcome and outcome[0].exception


def test_engagement_aggregates_exclude_machine_opens(built: Built) -> None:
    rows = built.rows(
        "select sent, delivered, opens, clicks, open_rate, messages, opened_messages"
        " from marts.agg_engagement_by_audience where audience = 'reengagement'"
    )
    assert [(s, d, o, c, float(r), m, om) for s, d, o, c, r, m, om in rows] == [
        (2, 2, 1, 1, 0.5, 2, 1)
    ]


def test_campaign_funnel_and_drop_off(built: Built) -> None:
    funnel = built.rows(
        "select sent, delivered, opened, clicked, dropped_before_delivery, dropped_before_open"
        " from marts.agg_campaign_funnel"
        " where audience = 'flu_vaccine_due' and campaign_sent_on = %s",
        (days_ago(5),),
    )
    assert funnel == [(8, 7, 1, 0, 1, 6)]  # the machine open does not count as opened


def test_deliverability_by_domain_and_open_timing(built: Built) -> None:
    domains = {
        domain: (messages, delivered, hard)
        for domain, messages, delivered, hard in built.rows(
            "select recipient_domain, messages, delivered, hard_bounces"
            " from marts.agg_deliverability_by_domain"
        )
    }
    assert domains["example.com"] == (1, 1, 0)  # marketing-ok's flu message
    assert sum(m for m, _, _ in domains.values()) == 11
    assert domains["example.org"][2] == 1  # booked's hard bounce
    timing = built.rows(
        "select day_of_week, hour_of_day, opens, clicks from marts.agg_open_timing"
        " where audience = 'reengagement'"
    )
    assert timing == [(days_ago(1).isoweekday(), 12, 1, 1)]


def test_contact_engagement_score_is_recency_weighted(built: Built) -> None:
    scores = {
        person: (float(score), tier, recency)
        for person, score, tier, recency in built.rows(
            "select person_token, engagement_score, engagement_tier, engagement_recency"
            " from marts.dim_contact_engagement"
        )
    }
    recent_click, older_open = scores["person-marketing-ok"], scores["person-fhir-marketing"]
    assert recent_click[0] > older_open[0] > 0
    assert recent_click[2] == older_open[2] == "0-29d"
    assert scores["person-expired"] == (0.0, "none", "never")
    assert scores["person-unsubscribed"][0] == 0.0


def test_behavioral_history_counts_opens_and_clicks(built: Built) -> None:
    rows = built.rows(
        "select person_token, opens_30d, clicks_30d, machine_opens_90d, engagement_recency"
        " from intermediate.int_engagement_behavior"
        " where person_token in ('person-marketing-ok', 'person-crm-only')"
        " order by person_token"
    )
    assert rows == [
        ("person-crm-only", 0, 0, 0, "never_engaged"),
        ("person-marketing-ok", 1, 1, 2, "engaged_30d"),
    ]


def test_analyst_role_reads_only_the_analyst_tier(built: Built) -> None:
    def can_read(relation: str) -> bool:
        schema = relation.split(".")[0]
        return built.rows(
            "select has_schema_privilege(%s, %s, 'usage')"
            " and has_table_privilege(%s, %s, 'select')",
            (ANALYST_ROLE, schema, ANALYST_ROLE, relation),
        )[0][0]

    analyst = [
        "marts.dim_persons",
        "marts.audience_membership",
        "marts.audience_exclusions",
        "marts.segment_catalog",
        "marts.agg_engagement_by_audience",
        "marts.agg_campaign_funnel",
        "marts.agg_deliverability_by_domain",
        "marts.agg_open_timing",
        "marts.dim_contact_engagement",
        *(f"marts.seg_{audience}" for audience in SEGMENTS),
    ]
    for relation in analyst:
        assert can_read(relation), relation
    for relation in (
        "marts.fct_email_events",
        "marts.fct_email_messages",
        "intermediate.int_consent_events",
        "intermediate.int_persons",
        "staging.stg_crm__contacts",
    ):
        assert not can_read(relation), relation


def test_feedback_models_are_tagged_and_downstream_only(built: Built) -> None:
    import json

    manifest = json.loads((built.tmp / "target" / "manifest.json").read_text())
    nodes = manifest["nodes"]
    feedback = {uid for uid, n in nodes.items() if "feedback" in n.get("tags", [])}
    assert {nodes[u]["name"] for u in feedback if nodes[u]["resource_type"] == "model"} >= {
        "stg_engine__events",
        "fct_email_events",
        "fct_email_messages",
        "agg_engagement_by_audience",
        "agg_campaign_funnel",
        "agg_deliverability_by_domain",
        "agg_open_timing",
        "dim_contact_engagement",
    }
    for uid, node in nodes.items():
        if uid not in feedback and node["resource_type"] == "model":
            parents = set(node["depends_on"]["nodes"])
            assert not parents & feedback, uid
            # this run's engine events (Dagster: engagement_events, downstream of activation)
            assert "source.audience_hub.engine.events" not in parents, uid
    sources = manifest["sources"]
    keys = {
        s["source_name"] + "." + s["name"]: s["meta"]["dagster"]["asset_key"]
        for s in sources.values()
    }
    assert keys["fhir.consents"] == ["landing", "fhir", "consents"]
    assert keys["hl7.merges"] == ["landing", "hl7", "merges"]
    assert keys["crm.contacts"] == ["landing", "crm", "contacts"]
    assert keys["hub.person_xref"] == ["person_xref"]
    assert keys["engine.events"] == ["engagement_events"]
    assert keys["engine.suppressions"] == ["suppression_list"]
    assert keys["engine_history.events"] == ["engagement_history"]
    behavioral = nodes["model.audience_hub.seg_non_openers_last_campaign"]
    assert "feedback" not in behavioral["tags"]
    for source in sources.values():
        if source["original_file_path"].startswith("models/staging/"):
            assert source["freshness"]["warn_after"]["count"], source["unique_id"]


def test_parse_docs_generate_and_every_column_described(built: Built) -> None:
    import json

    with dbt_environment(built.warehouse):
        parsed = run_dbt(built.tmp, "parse")
        assert parsed.success, parsed.exception
        docs = run_dbt(
            built.tmp, "docs", "generate", "--vars", f"{{evaluation_date: '{EVALUATION_DATE}'}}"
        )
        assert docs.success, docs.exception
    manifest = json.loads((built.tmp / "target" / "manifest.json").read_text())
    catalog = json.loads((built.tmp / "target" / "catalog.json").read_text())
    undocumented = []
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] != "model":
            continue
        if not node["description"].strip():
            undocumented.append(uid)
        described = {n for n, c in node["columns"].items() if c["description"].strip()}
        actual = set(catalog["nodes"][uid]["columns"])
        undocumented += [f"{uid}.{column}" for column in sorted(actual - described)]
        if node["fqn"][1:3] in (["marts", f] for f in CONTRACTED_MART_FOLDERS):
            assert node["contract"]["enforced"], uid
    assert not undocumented


def test_incremental_models_pick_up_late_arriving_rows(built: Built) -> None:
    """A re-run reads only what arrived since the last run (minus the look-back): late events
    and updated encounters land, rows loaded before the window are left alone."""
    with built.warehouse.connect() as conn:
        (watermark,) = conn.execute(
            "select max(received_at) from marts.fct_email_events"
        ).fetchone()
        # an open from 3 weeks ago that reached the hub only now
        insert_event(conn, "late-open", "reengagement", "fhir-marketing", "open", days_ago(21))
        # stored by a feedback transaction that began before the last build (inside the window)
        insert_event(conn, "in-window", "reengagement", "fhir-marketing", "click", days_ago(1))
        conn.execute(
            "update engagement.events set received_at = %s - interval '1 hour'"
            " where event_id = 'in-window'",
            (watermark,),
        )
        # far older than the window: an incremental run must not re-read it
        insert_event(conn, "outside-window", "reengagement", "fhir-marketing", "click", days_ago(1))
        conn.execute(
            "update engagement.events set received_at = %s - interval '3 hours'"
            " where event_id = 'outside-window'",
            (watermark,),
        )
        # an encounter re-sent as entered-in-error replaces its row in landing
        conn.execute(
            "update landing.encounters set status = 'entered-in-error', loaded_at = now()"
            " where source_id_token = 'enc-post-op-1'"
        )
        # ... and so is an HbA1c result (observations are a view: no run needed)
        conn.execute(
            "update landing.observations set status = 'entered-in-error', loaded_at = now()"
            " where source_id_token = 'obs-treatment-only'"
        )
    with dbt_environment(built.warehouse):
        rerun = run_dbt(
            built.tmp,
            "run",
            "--select",
            "int_encounters_deduplicated fct_email_events dim_persons",
            "--vars",
            f"{{evaluation_date: '{EVALUATION_DATE}', analyst_role: hub_role_that_does_not_exist}}",
        )
    assert rerun.success, rerun.exception
    events = {e for (e,) in built.rows("select event_id from marts.fct_email_events")}
    assert {"late-open", "in-window"} <= events
    assert "outside-window" not in events  # proof the run was incremental, not a rebuild
    assert len(events) == len(ENGAGEMENT_EVENTS) + 2
    statuses = built.rows(
        "select status, counts_as_visit from intermediate.int_encounters_deduplicated"
        " where encounter_key = 'enc-post-op-1'"
    )
    assert statuses == [("entered-in-error", False)]
    (encounters,) = built.rows("select count(*) from intermediate.int_encounters_deduplicated")[0]
    (landed,) = built.rows("select count(*) from landing.encounters")[0]
    assert encounters == landed
    assert not built.rows(
        "select 1 from intermediate.int_observations where observation_token = 'obs-treatment-only'"
    )

"""The dbt project, built for real against a fresh embedded PostgreSQL with a hand-made dataset.

One `dbt build` per session (seeds, models, unit tests, data tests) on a small fixture that
covers every consent case, then assertions on the marts the send step and analysts read, plus a
check that the SQL consent state equals domain/consent.py on every person, purpose and day.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from connectors.warehouse.database import Warehouse
from connectors.warehouse.embedded import stop_embedded
from domain.consent import PURPOSES, ConsentEvent, consent_state_on

DBT_PROJECT = Path(__file__).resolve().parents[2] / "dbt_project"
EVALUATION_DATE = date(2025, 10, 15)  # flu season 2025/26 started 2025-08-01
D = EVALUATION_DATE
SEGMENTS = {
    "flu_vaccine_due": "treatment",
    "diabetes_hba1c_overdue": "treatment",
    "reengagement": "marketing",
    "breast_cancer_screening_due": "treatment",
}


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

    @property
    def token(self) -> str:
        return f"person-{self.name}"

    def subject(self, source: str) -> str:
        return f"subject-{source}-{self.name}"


LONG_AGO = days_ago(700)  # no visit in 18 months -> re-engagement candidate
MARKETING_OK = dict(
    sources=("fhir", "crm"),
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
        conn.execute(
            f"insert into landing.{table} ({', '.join(columns)})"
            f" values ({', '.join(['%s'] * len(columns))})",
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
                # Landing keeps one row per natural key (the loader merges versions by
                # effective time, tested in tests/connectors/test_warehouse_loader.py).
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
    events = [
        ("e1", "reengagement", "person-marketing-ok", "sent", False),
        ("e2", "reengagement", "person-marketing-ok", "delivered", False),
        ("e3", "reengagement", "person-marketing-ok", "open", True),
        ("e4", "reengagement", "person-marketing-ok", "open", False),
        ("e5", "reengagement", "person-marketing-ok", "click", False),
        ("e6", "reengagement", "person-fhir-marketing", "sent", False),
        ("e7", "reengagement", "person-fhir-marketing", "delivered", False),
    ]
    for event_id, audience, person, event_type, machine in events:
        conn.execute(
            "insert into engagement.events (event_id, destination, audience, person_token,"
            " event_type, occurred_at, machine_open) values (%s, 'sandbox', %s, %s, %s, %s, %s)",
            (event_id, audience, person, event_type, ts(days_ago(1)), machine),
        )


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
    assert kinds["unit_test"] >= 5  # the int_consent_state unit tests ran and passed


def test_every_segment_is_non_empty_and_catalogued(built: Built) -> None:
    catalog = {
        audience: (purpose, fields)
        for audience, purpose, fields in built.rows(
            "select audience, purpose, personalization_fields from marts.segment_catalog"
        )
    }
    assert {a: p for a, (p, _) in catalog.items()} == SEGMENTS
    assert all(fields == ["given_name"] for _, fields in catalog.values())
    for audience in SEGMENTS:
        (count,) = built.rows(f"select count(*) from marts.seg_{audience}")[0]
        assert count > 0, audience


def test_marketing_audience_keeps_only_valid_authorizations(built: Built) -> None:
    assert members(built, "reengagement") == tokens("marketing-ok", "fhir-marketing")
    excluded = tokens(
        "expired",
        "revoked",
        "unsubscribed",
        "hard-bounced",
        "complained",
        "treatment-only",
        "crm-only",
    )
    marketing = {a for a, p in SEGMENTS.items() if p == "marketing"}
    for audience in marketing:
        assert not members(built, audience) & excluded
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
    assert exclusions["flu_vaccine_due"] == {"hard_bounced": 1, "complained": 1, "denied": 1}
    assert "diabetes_hba1c_overdue" not in exclusions


def test_dim_persons_is_safe_harbor(built: Built) -> None:
    columns = [
        c
        for (c,) in built.rows(
            "select column_name from information_schema.columns"
            " where table_schema = 'marts' and table_name = 'dim_persons' order by ordinal_position"
        )
    ]
    assert columns == ["person_token", "birth_year", "age_band", "sex", "zip3", "state", "language"]
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


def test_engagement_aggregates_exclude_machine_opens(built: Built) -> None:
    rows = built.rows(
        "select sent, delivered, opens, clicks, open_rate from marts.agg_engagement_by_audience"
        " where audience = 'reengagement'"
    )
    assert [(s, d, o, c, float(r)) for s, d, o, c, r in rows] == [(2, 2, 1, 1, 0.5)]


def test_feedback_models_are_tagged_and_downstream_only(built: Built) -> None:
    import json

    manifest = json.loads((built.tmp / "target" / "manifest.json").read_text())
    nodes = manifest["nodes"]
    feedback = {uid for uid, n in nodes.items() if "feedback" in n.get("tags", [])}
    assert {nodes[u]["name"] for u in feedback if nodes[u]["resource_type"] == "model"} == {
        "stg_engine__events",
        "fct_email_events",
        "agg_engagement_by_audience",
    }
    for uid, node in nodes.items():
        if uid not in feedback and node["resource_type"] == "model":
            assert not set(node["depends_on"]["nodes"]) & feedback, uid
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


def test_parse_and_docs_generate(built: Built) -> None:
    with dbt_environment(built.warehouse):
        parsed = run_dbt(built.tmp, "parse")
        assert parsed.success, parsed.exception
        docs = run_dbt(
            built.tmp, "docs", "generate", "--vars", f"{{evaluation_date: '{EVALUATION_DATE}'}}"
        )
        assert docs.success, docs.exception
    assert (built.tmp / "target" / "catalog.json").exists()

"""Retention purges what outlived its period (audited, never the audit log or pending rows);
`hub policy check` lists uncovered fields with counts; the k-anonymity report runs on marts."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from connectors.warehouse.audit import verify_chain
from domain.policy import default_policy
from domain.privacy_settings import (
    PrivacySettingsError,
    RetentionSettings,
    load_privacy_settings,
)
from pipelines.cli import app
from services.kanon import dim_persons_kanon
from services.policy_check import check_policy
from services.retention import purge
from tests.privacy.population import population_files

OLD = datetime.now(UTC) - timedelta(days=3000)
RECENT = datetime.now(UTC) - timedelta(days=1)


@pytest.fixture
def aged(make_database):
    """A warehouse with old and recent rows in every purgeable place."""
    warehouse = make_database()
    with warehouse.connect() as conn:
        for event_id, at in (("old", OLD), ("new", RECENT)):
            conn.execute(
                "insert into engagement.events (event_id, destination, person_token, event_type,"
                " occurred_at) values (%s, 'sandbox', 't1_p', 'open', %s)",
                (event_id, at),
            )
        file_id = conn.execute(
            "insert into landing.source_files (uri, source, size_bytes, sha256)"
            " values ('f', 'crm', 1, 'x') returning file_id"
        ).fetchone()[0]
        for position, at in (("1", OLD), ("2", RECENT)):
            conn.execute(
                "insert into quarantine.records (file_id, source, position, reason, message,"
                " payload_key_version, payload, quarantined_at)"
                " values (%s, 'crm', %s, 'CRM_BAD_DATE', 'm', 1, '\\x01', %s)",
                (file_id, position, at),
            )
        for run_id, at in (("run-old", OLD), ("run-new", RECENT)):
            conn.execute(
                "insert into activation.sync_runs (run_id, destination, audience, purpose, mode,"
                " dry_run, evaluated_on, started_at, finished_at, status) values"
                " (%s, 'sandbox', 'a', 'marketing', 'mirror', false, current_date, %s, %s,"
                " 'succeeded')",
                (run_id, at, at),
            )
        for status, at in (("acked", OLD), ("pending", OLD), ("acked", RECENT)):
            conn.execute(
                "insert into activation.ledger (run_id, destination, audience, batch_key,"
                " operation, person_token, purpose, status, created_at) values"
                " (%s, 'sandbox', 'a', 'b', 'add', 't1_p', 'marketing', %s, %s)",
                ("run-old" if at == OLD else "run-new", status, at),
            )
        conn.execute(
            "insert into engagement.suppressions (event_id, destination, person_token,"
            " event_type, effective_at) values ('s-old', 'sandbox', 't1_p', 'unsubscribe', %s)",
            (OLD,),
        )
    return warehouse


def _counts(conn) -> dict[str, int]:
    return {
        "events": conn.execute("select count(*) from engagement.events").fetchone()[0],
        "payloads": conn.execute(
            "select count(*) from quarantine.records where payload is not null"
        ).fetchone()[0],
        "quarantine_rows": conn.execute("select count(*) from quarantine.records").fetchone()[0],
        "ledger": conn.execute("select count(*) from activation.ledger").fetchone()[0],
        "pending": conn.execute(
            "select count(*) from activation.ledger where status = 'pending'"
        ).fetchone()[0],
        "suppressions": conn.execute("select count(*) from engagement.suppressions").fetchone()[0],
    }


def test_purge_removes_only_what_outlived_its_period_and_is_audited(aged):
    settings = RetentionSettings(
        engagement_events_days=365, quarantine_payload_days=30, sync_changelog_days=365
    )
    with aged.connect() as conn:
        before = _counts(conn)
        preview = purge(conn, settings, dry_run=True)
        unchanged = _counts(conn)
        report = purge(conn, settings)
        after = _counts(conn)
        audited = conn.execute(
            "select action, object, row_count from audit.events"
            " where action like 'retention%%' order by audit_id"
        ).fetchall()
        intact, _, _ = verify_chain(conn)
    purged = report.as_dict()["purged"]
    assert preview.as_dict()["purged"] == purged
    assert unchanged == before
    assert purged == {
        "engagement.events": 1,
        "quarantine.records.payload": 1,
        "activation.ledger": 1,
        "activation.sync_runs": 0,  # the old run still has its pending row
        "activation.forget_queue": 0,
    }
    assert after["events"] == 1 and after["payloads"] == 1
    assert after["quarantine_rows"] == before["quarantine_rows"]  # the reason stays
    assert after["pending"] == 1  # crash recovery still needs it
    assert after["suppressions"] == before["suppressions"]  # consent state is never purged
    assert len(audited) == 10 and {a for a, _, _ in audited} == {
        "retention_dry_run",
        "retention_purge",
    }
    assert intact


def test_audit_retention_below_six_years_is_refused(tmp_path):
    bad = tmp_path / "privacy.yaml"
    bad.write_text("retention:\n  audit_years: 2\n")
    with pytest.raises(PrivacySettingsError, match=r"retention\.audit_years"):
        load_privacy_settings(bad)
    assert load_privacy_settings().retention.audit_years >= 6


def test_cli_retention_purge_dry_run_reports_counts(aged, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", aged.url())
    result = CliRunner().invoke(app, ["retention", "purge", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["dry_run"] is True


def test_policy_check_lists_uncovered_fields_with_counts_and_no_values(
    generated_population, tmp_path
):
    report = check_policy(population_files(generated_population), default_policy())
    assert report.records > 0 and report.files >= 3
    # A policy that forgets a field: every record carrying it is counted, by name only.
    policy = default_policy().model_copy(deep=True)
    del policy.entities["patient"].fields["ssn"]
    fhir = [str(p) for p in sorted((generated_population / "fhir").glob("Patient*"))]
    narrowed = check_policy(fhir, policy)
    assert narrowed.uncovered["patient.ssn"] > 0
    assert set(narrowed.uncovered) >= {"patient.ssn"} | set(report.uncovered)
    result = CliRunner().invoke(app, ["policy", "check", *fhir, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["records"] == narrowed.records
    with open(generated_population / "crm" / "contacts.csv", newline="") as handle:
        emails = [row["email"] for row in csv.DictReader(handle) if row["email"]]
    assert not any(email in result.output for email in emails)


def test_kanon_report_over_dim_persons_finds_small_cells_and_suggests_a_fix(make_database):
    warehouse = make_database()
    with warehouse.connect() as conn:
        conn.execute("create schema if not exists marts")
        conn.execute(
            "create table marts.dim_persons (person_token text, zip3 text, birth_year integer,"
            " sex text)"
        )
        rows = [(f"t1_{i}", "100", 1980 + i % 4, "female") for i in range(60)]
        rows += [("t1_rare", "967", 1931, "male")]  # one person alone in a cell
        with conn.cursor() as cur:
            cur.executemany("insert into marts.dim_persons values (%s, %s, %s, %s)", rows)
        report = dim_persons_kanon(conn)
    assert report.k == 11 and report.records == 61
    assert [c.values for c in report.small_cells] == [("967", 1931, "male")]
    assert report.suggestion is not None
    assert report.suggestion.records_to_suppress <= 1

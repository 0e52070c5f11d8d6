"""The `hub` command line against the session's embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def test_db_url_prints_the_warehouse_connection_string(warehouse):
    result = runner.invoke(app, ["db", "url"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == warehouse.url()
    assert result.output.startswith("postgresql://")


def test_ingest_json_reports_per_file_counts_without_phi(warehouse, shared_data):
    files = [
        shared_data / "fhir" / "Patient-fhiry-25.ndjson",
        shared_data / "fhir" / "consent" / "consent-example-smartonfhir.json",
        shared_data / "hl7" / "ADT-A01-01.hl7",
        shared_data / "hl7" / "MDM-T01-01.hl7",
        shared_data / "crm" / "customers-100.csv",
    ]
    result = runner.invoke(app, ["ingest", *map(str, files), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["files"]
    assert len(report) == len(files)
    for row in report:
        assert row["read"] == row["loaded"] + row["quarantined"] > 0
    by_name = {Path(row["uri"]).name: row for row in report}
    assert by_name["MDM-T01-01.hl7"]["quarantined_by_reason"] == {"HL7_UNSUPPORTED_TYPE": 1}
    assert by_name["customers-100.csv"]["loaded"] == 100
    # Names, emails and birth dates from the inputs never reach the operator's screen.
    patient = json.loads((shared_data / "fhir" / "Patient-fhiry-25.ndjson").open().readline())
    for value in (patient["name"][0]["family"], patient["birthDate"]):
        assert value not in result.output
    customer_line = (shared_data / "crm" / "customers-100.csv").read_text().splitlines()[1]
    for value in customer_line.split(",")[2:4]:
        assert value not in result.output

    again = runner.invoke(app, ["ingest", *map(str, files), "--json"])
    assert all(row["skipped"] for row in json.loads(again.output)["files"])


def test_audit_chain_verifies(warehouse):
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output


def test_generate_writes_all_three_sources(tmp_path):
    result = runner.invoke(app, ["generate", "--patients", "20", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fhir" / "Patient.000.ndjson").exists()
    assert (tmp_path / "hl7" / "adt.hl7").exists()
    assert (tmp_path / "crm" / "contacts.csv").exists()


def test_workspace_definitions_validate():
    """`dagster definitions validate` loads workspace.yaml cleanly (as `dagster dev` would)."""
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DO_NOT_TRACK": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stderr + result.stdout


def test_resolve_prints_a_match_report_without_phi(warehouse, shared_data):
    runner.invoke(app, ["ingest", str(shared_data / "crm" / "leads-100.csv")])
    result = runner.invoke(app, ["resolve", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["persons"] <= report["subjects"]
    assert set(report) == {"subjects", "persons", "links_by_key_type", "merges_applied"}

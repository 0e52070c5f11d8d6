"""PHI canaries: distinctive values driven through every source and the whole Dagster pipeline
appear nowhere but the vault - not in any table of any schema, not in Python or Dagster logs,
not in dbt artifacts, not in CLI output - and neither does any key. The same scan runs as a
blocking asset check that stops activation when it finds anything."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from domain.dlp import DlpScanner
from domain.keys import KeyringFileProvider, master_file_for
from pipelines.cli import app
from pipelines.dbt_project import dbt_project_dir
from pipelines.definitions import build_definitions
from pipelines.resources import (
    EmailEngineResource,
    InboundResource,
    PrivacyResource,
    WarehouseResource,
)
from services.ingest import ingest_uris
from services.phi_scan import scan_files, scan_tables, scan_texts
from tests.privacy.canary_data import CANARIES, canary_values, write_canary_sources

pytestmark = pytest.mark.slow


class _Capture(logging.Handler):
    """Every Python log record of the run, formatted as it would be written."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot format is still scanned raw
            self.lines.append(f"{record.msg} {record.args}")


def _key_material(hub_state: Path) -> list[str]:
    provider = KeyringFileProvider(hub_state / "keyring.json")
    keys = [*provider.vault_cipher().keys.values(), provider.tokenizer().key]
    material = [form for key in keys for form in (base64.b64encode(key).decode(), key.hex())]
    master = master_file_for(provider.path)
    if master.exists():
        material.append(master.read_text().strip())
    return material


def _public_samples(shared_data: Path) -> list[str]:
    fhir = sorted((shared_data / "fhir").rglob("*.ndjson")) + sorted(
        (shared_data / "fhir").rglob("*.json")
    )
    return [
        str(p)
        for p in [
            *fhir,
            *sorted((shared_data / "hl7").glob("*.hl7")),
            *sorted((shared_data / "crm").glob("*.csv")),
        ]
    ]


@pytest.fixture(scope="module")
def canary_run(warehouse, hub_state, shared_data, tmp_path_factory):
    started = time.time()
    inbound = tmp_path_factory.mktemp("canary-inbound")
    write_canary_sources(inbound)
    # Every public sample is in the warehouse too (already-loaded files are skipped).
    with warehouse.connect() as conn:
        ingest_uris(conn, _public_samples(shared_data), PrivacyResource().protector())
    planted = tmp_path_factory.mktemp("canary-list") / "canaries.json"
    planted.write_text(json.dumps(canary_values()))
    previous = os.environ.get("HUB_PHI_CANARIES")
    os.environ["HUB_PHI_CANARIES"] = str(planted)
    capture = _Capture()
    loggers = [logging.getLogger(), logging.getLogger("dagster")]
    for logger in loggers:
        logger.addHandler(capture)
    previous_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        defs = build_definitions(
            {
                "warehouse": WarehouseResource(state_folder=str(hub_state)),
                "inbound": InboundResource(root=str(inbound)),
                "email_engine": EmailEngineResource(state_folder=str(hub_state)),
            }
        )
        instance = dg.DagsterInstance.ephemeral()
        result = defs.resolve_job_def("full_pipeline").execute_in_process(instance=instance)
        events = [repr(entry) for entry in instance.all_logs(result.run_id)]
        cli = _cli_outputs(inbound)
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
        logging.getLogger().setLevel(previous_level)
        if previous is None:
            os.environ.pop("HUB_PHI_CANARIES", None)
        else:
            os.environ["HUB_PHI_CANARIES"] = previous
    assert result.success
    return {
        "started": started,
        "inbound": inbound,
        "result": result,
        "events": events,
        "logs": capture.lines,
        "cli": cli,
        "keys": _key_material(hub_state),
    }


def _cli_outputs(inbound: Path) -> dict[str, str]:
    files = [str(p) for p in sorted(inbound.rglob("*")) if p.is_file() and p.suffix != ".json"]
    files += [str(p) for p in sorted((inbound / "fhir").glob("*.ndjson"))]
    email = CANARIES[0].email
    commands = {
        "ingest": ["ingest", *files, "--json"],
        "resolve": ["resolve", "--json"],
        "quarantine list": ["quarantine", "list", "--all", "--json", "--limit", "100000"],
        "audit verify": ["audit", "verify"],
        "audit disclosures": ["audit", "disclosures", "--person", email, "--json"],
        "policy check": ["policy", "check", *files, "--json"],
        "policy scan": ["policy", "scan", "--json"],
        "forget dry run": ["forget", "--person", CANARIES[1].mrn, "--dry-run", "--json"],
        "keys status": ["keys", "status", "--json"],
        "retention dry run": ["retention", "purge", "--dry-run", "--json"],
    }
    runner = CliRunner()
    outputs = {}
    for name, args in commands.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{name}: {result.output}"
        outputs[name] = result.output
    return outputs


def _scanner(canary_run, patterns: tuple[str, ...] = ()) -> DlpScanner:
    return DlpScanner(kinds=patterns, exact={**canary_values(), "key": canary_run["keys"]})


def _hits(report) -> list[str]:
    return [f"{where}: {kind} x{n}" for (where, kind), n in sorted(report.hits.items())]


def test_canaries_really_went_in_and_sit_in_the_vault_and_quarantine(canary_run, warehouse):
    """Guard against a vacuous pass: the canaries were loaded, vaulted and quarantined."""
    cipher = PrivacyResource().vault_cipher()
    tokenizer = PrivacyResource().tokenizer()
    with warehouse.connect() as conn:
        found = []
        for canary in CANARIES:
            rows = conn.execute(
                "select v.subject_token, v.key_version, v.ciphertext from vault.identity_keys k"
                " join vault.contact_fields v using (subject_token)"
                " where k.key_type = 'email' and k.key_hash = %s and v.column_name = 'email'",
                (tokenizer.token("id:email", canary.email),),
            ).fetchall()
            found.append({cipher.decrypt(s, "email", v, blob) for s, v, blob in rows})
        quarantined = conn.execute(
            "select count(*) from quarantine.records q join landing.source_files f"
            " using (file_id) where f.uri like %s and q.payload is not null",
            (f"{canary_run['inbound']}%",),
        ).fetchone()[0]
    assert all(found), "every canary person has a vaulted email"
    assert quarantined >= 2 * len(CANARIES)  # bad FHIR Patient + bad CRM row each


def test_no_canary_or_key_in_any_table_outside_the_vault(canary_run, warehouse):
    with warehouse.connect() as conn:
        report = scan_tables(conn, _scanner(canary_run))
    assert len(report.scanned) > 20 and sum(report.scanned.values()) > 1000
    assert {"landing.patients", "quarantine.records", "activation.ledger"} <= set(report.scanned)
    assert report.clean, _hits(report)


def test_no_email_or_ssn_pattern_in_any_table_outside_the_vault(canary_run, warehouse):
    """Not only the canaries: no generated or sample person's email or SSN either."""
    with warehouse.connect() as conn:
        report = scan_tables(conn, DlpScanner(kinds=("email", "ssn")))
    assert report.clean, _hits(report)


def test_no_canary_or_key_in_python_logs_or_dagster_event_metadata(canary_run):
    assert len(canary_run["events"]) > 50 and canary_run["logs"]
    report = scan_texts(
        {
            **{f"dagster event {i}": text for i, text in enumerate(canary_run["events"])},
            **{f"log line {i}": text for i, text in enumerate(canary_run["logs"])},
        },
        _scanner(canary_run, ("email", "ssn")),
    )
    assert report.clean, _hits(report)


def test_no_canary_or_key_in_dbt_target_artifacts_or_logs(canary_run):
    project = dbt_project_dir()
    # What this run wrote (dagster-dbt keeps one target folder per invocation).
    report = scan_files(
        [project / "target", project / "logs"], _scanner(canary_run), canary_run["started"]
    )
    assert any(where.endswith("run_results.json") for where in report.scanned)
    assert any(where.endswith("manifest.json") for where in report.scanned)
    assert report.clean, _hits(report)


def test_no_canary_or_key_in_cli_output(canary_run):
    outputs = canary_run["cli"]
    assert json.loads(outputs["policy scan"])["clean"] is True
    assert json.loads(outputs["forget dry run"])["persons"] == 1  # found, by hashed MRN
    report = scan_texts(outputs, _scanner(canary_run, ("email", "ssn")))
    assert report.clean, _hits(report)


def test_the_scan_ran_as_a_blocking_check_before_activation_and_passed(canary_run):
    result = canary_run["result"]
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "phi_canary_scan"
    ]
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert evaluation.passed
    assert metadata["tables_scanned"] > 20 and metadata["findings"] == 0
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey("audience_syncs") in materialized  # activation ran after it passed


def test_a_leak_fails_the_check_and_activation_does_not_run(make_database, tmp_path, monkeypatch):
    from assets.activate import audience_syncs
    from assets.privacy_checks import phi_canary_scan

    leaky = make_database()
    with leaky.connect() as conn:
        conn.execute(
            "insert into activation.approvals (audience, destination, definition_hash, purpose,"
            " personalization_fields, approved_by, note) values ('a', '*', 'h', 'marketing',"
            " '{}', 'ops', %s)",
            (f"approved after a call with {CANARIES[2].given} {CANARIES[2].family}",),
        )
    planted = tmp_path / "canaries.json"
    planted.write_text(json.dumps(canary_values()))
    monkeypatch.setenv("HUB_PHI_CANARIES", str(planted))

    @dg.asset(key=["marts", "audience_membership"])
    def audience_membership() -> None:
        """Stands in for the dbt mart the check guards."""

    result = dg.materialize(
        [audience_membership, audience_syncs, phi_canary_scan],
        resources={
            "warehouse": WarehouseResource(database_url=leaky.url()),
            "privacy": PrivacyResource(keyring_path=str(tmp_path / "keyring.json")),
            "email_engine": EmailEngineResource(state_folder=str(tmp_path)),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    [evaluation] = result.get_asset_check_evaluations()
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert not evaluation.passed
    assert metadata["where"] == ["activation.approvals: exact:name"]
    assert dg.AssetKey("audience_syncs") not in materialized
    assert CANARIES[2].family not in json.dumps(metadata, ensure_ascii=False)

"""`hub forget` shreds one person everywhere it must and nobody else; `hub audit disclosures`
accounts for what was sent about them. Both find the person by hashed identifiers only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.email.base import Member
from connectors.email.http_api import HttpEngine
from connectors.warehouse.audit import verify_chain
from domain.dlp import DlpScanner
from domain.policy import default_policy
from domain.protect import Protector
from pipelines.cli import app
from sandbox.engine import SandboxEngine
from services.disclosures import account_disclosures
from services.forget import drain_forget_queue, forget_person
from services.ingest import ingest_uris

AUDIENCE = "reengagement"


def _patients_with_email(folder: Path) -> list[dict]:
    people = []
    for line in (folder / "fhir" / "Patient.000.ndjson").read_text().splitlines():
        try:
            resource = json.loads(line)
        except ValueError:
            continue
        emails = [t["value"] for t in resource.get("telecom", []) if t.get("system") == "email"]
        mrns = [i["value"] for i in resource.get("identifier", []) if "19.5" in i.get("system", "")]
        if emails and mrns and resource.get("birthDate", "").startswith(("19", "20")):
            people.append({"email": emails[0], "mrn": mrns[0], "id": resource["id"]})
    return people


@pytest.fixture
def world(populated_copy, generated_population, tmp_path):
    """A populated warehouse where two people were synced to a running SANDBOX engine and one
    of them also sits in quarantine (a CRM row with a bad date carrying their email)."""
    warehouse, keyring = populated_copy
    target, control = _patients_with_email(generated_population)[:2]
    bad_row = tmp_path / "bad-contacts.csv"
    with open(generated_population / "crm" / "contacts.csv", newline="") as handle:
        header = next(csv.reader(handle))
    with open(bad_row, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerow(
            {"contact_id": "C-BAD-1", "email": target["email"], "birth_date": "31/31/31"}
        )
        writer.writerow({"contact_id": "C-BAD-2", "email": control["email"], "birth_date": "xx"})
    protector = Protector(default_policy(), keyring.tokenizer(), keyring.vault_cipher())
    sandbox = SandboxEngine(tmp_path / "sandbox")
    sandbox.start()
    engine = HttpEngine(
        sandbox.base_url, sandbox.token, sandbox.signing_secret, str(sandbox.ca_cert_path)
    )
    with warehouse.connect() as conn:
        [result] = ingest_uris(conn, [str(bad_row)], protector)
        assert result.quarantined == 2
        persons = {}
        for who in (target, control):
            persons[who["email"]] = conn.execute(
                "select x.person_token from vault.identity_keys k join landing.person_xref x"
                " using (subject_token) where k.key_type = 'mrn' and k.key_hash = %s",
                (keyring.tokenizer().token("id:mrn", f"HUBHOSP|{who['mrn']}"),),
            ).fetchone()[0]
        conn.execute(
            "insert into activation.sync_runs (run_id, destination, audience, purpose, mode,"
            " dry_run, evaluated_on, status) values"
            " ('run-1', 'sandbox', %s, 'marketing', 'mirror', false, current_date, 'succeeded')",
            (AUDIENCE,),
        )
        conn.execute("create schema if not exists marts")
        conn.execute("create table marts.audience_membership (audience text, person_token text)")
        for person in persons.values():
            conn.execute(
                "insert into activation.ledger (run_id, destination, audience, batch_key,"
                " operation, person_token, purpose, consent_ref, payload_hash, status, acked_at)"
                " values ('run-1', 'sandbox', %s, 'b1', 'add', %s, 'marketing',"
                " 'consent-ref-1', 'h', 'acked', now())",
                (AUDIENCE, person),
            )
            conn.execute(
                "insert into activation.sync_state (destination, audience, person_token,"
                " payload_hash) values ('sandbox', %s, %s, 'h')",
                (AUDIENCE, person),
            )
            conn.execute(
                "insert into marts.audience_membership values (%s, %s)", (AUDIENCE, person)
            )
        conn.commit()
    engine.ensure_audience(AUDIENCE, AUDIENCE, "marketing")
    engine.upsert(
        AUDIENCE,
        [Member(external_id=p, email=e) for e, p in persons.items()],
        idempotency_key="seed-1",
    )
    yield warehouse, keyring, target, control, persons, engine
    sandbox.stop()


def _vault_rows(conn, person: str) -> int:
    return conn.execute(
        "select count(*) from vault.contact_fields v join landing.person_xref x"
        " using (subject_token) where x.person_token = %s",
        (person,),
    ).fetchone()[0]


def _payload_holders(conn, cipher, email: str) -> int:
    found = 0
    scanner = DlpScanner(kinds=(), exact=[email])
    for file_id, position, version, blob in conn.execute(
        "select file_id, position, payload_key_version, payload from quarantine.records"
        " where payload is not null"
    ):
        raw = cipher.decrypt_bytes(f"quarantine:{file_id}", position, version, blob).decode()
        found += not scanner.is_clean(raw)
    return found


def test_forget_by_email_shreds_the_person_and_queues_engine_removals(world):
    warehouse, keyring, target, control, persons, engine = world
    cipher = keyring.vault_cipher()
    with warehouse.connect() as conn:
        assert _vault_rows(conn, persons[target["email"]]) > 0
        assert _payload_holders(conn, cipher, target["email"]) == 1
        report = forget_person(
            conn, keyring.tokenizer(), cipher, default_policy(), target["email"].upper()
        )
        target_rows = _vault_rows(conn, persons[target["email"]])
        control_rows = _vault_rows(conn, persons[control["email"]])
        keys_left = conn.execute(
            "select count(*) from vault.identity_keys k join landing.person_xref x"
            " using (subject_token) where x.person_token = %s",
            (persons[target["email"]],),
        ).fetchone()[0]
        state = [p for (p,) in conn.execute("select person_token from activation.sync_state")]
        members = [p for (p,) in conn.execute("select person_token from marts.audience_membership")]
        target_payloads = _payload_holders(conn, cipher, target["email"])
        control_payloads = _payload_holders(conn, cipher, control["email"])
        queued = conn.execute(
            "select destination, audience, person_token, status from activation.forget_queue"
        ).fetchall()
        drained = drain_forget_queue(conn, engine, "sandbox")
        statuses = [s for (s,) in conn.execute("select status from activation.forget_queue")]
        audit = conn.execute(
            "select action, role, purpose, object from audit.events"
            " where action in ('forget', 'forget_engine_removal') order by audit_id"
        ).fetchall()
        intact, _, _ = verify_chain(conn)
    at_engine = engine.list_member_ids(AUDIENCE)
    assert report.persons == 1 and report.vault_rows_shredded > 0
    assert report.identity_keys_removed > 0 and report.quarantine_payloads_shredded == 1
    assert target_rows == 0 and keys_left == 0 and target_payloads == 0
    assert control_rows > 0 and control_payloads == 1  # nobody else is touched
    assert state == [persons[control["email"]]] and members == [persons[control["email"]]]
    assert queued == [("sandbox", AUDIENCE, persons[target["email"]], "pending")]
    assert drained.removed == 1 and statuses == ["removed"]
    assert at_engine == [persons[control["email"]]]
    assert [(a, r, p) for a, r, p, _ in audit] == [
        ("forget", "hub_owner", "privacy_request"),
        ("forget_engine_removal", "hub_sender", "privacy_request"),
    ]
    assert target["email"].lower() not in json.dumps(audit).lower()
    assert intact


def test_forget_by_mrn_or_token_finds_the_same_person_and_a_dry_run_changes_nothing(world):
    warehouse, keyring, target, _, persons, _ = world
    tokenizer, cipher, policy = keyring.tokenizer(), keyring.vault_cipher(), default_policy()
    with warehouse.connect() as conn:
        by_mrn = forget_person(conn, tokenizer, cipher, policy, target["mrn"], dry_run=True)
        by_token = forget_person(
            conn, tokenizer, cipher, policy, persons[target["email"]], dry_run=True
        )
        nobody = forget_person(conn, tokenizer, cipher, policy, "nobody@example.invalid")
        still_there = _vault_rows(conn, persons[target["email"]])
    assert by_mrn.matched_by == "mrn" and by_token.matched_by == "token"
    assert by_mrn.vault_rows_shredded == by_token.vault_rows_shredded == still_there > 0
    assert by_mrn.subjects == by_token.subjects
    assert nobody.persons == 0


def test_disclosures_account_for_every_send_with_purpose_consent_and_fields(world):
    warehouse, keyring, target, _, _, _ = world
    with warehouse.connect() as conn:
        accounting = account_disclosures(
            conn, keyring.tokenizer(), default_policy(), target["email"]
        )
        logged = conn.execute(
            "select count(*) from audit.events where action = 'disclosure_accounting'"
        ).fetchone()[0]
    [sent] = accounting.disclosures
    assert accounting.persons == 1
    assert (sent.destination, sent.audience, sent.operation, sent.status) == (
        "sandbox",
        AUDIENCE,
        "add",
        "acked",
    )
    assert sent.purpose == "marketing" and sent.consent_ref == "consent-ref-1"
    assert sent.fields == ["email"]
    assert logged == 1


def test_cli_forget_and_disclosures_print_counts_not_phi(world, monkeypatch):
    warehouse, keyring, target, _, _, _ = world
    monkeypatch.setenv("DATABASE_URL", warehouse.url())
    monkeypatch.setenv("HUB_STATE_DIR", str(keyring.path.parent))
    runner = CliRunner()
    shown = runner.invoke(app, ["audit", "disclosures", "--person", target["email"], "--json"])
    dry = runner.invoke(app, ["forget", "--person", target["email"], "--dry-run", "--json"])
    real = runner.invoke(app, ["forget", "--person", target["mrn"]])
    assert shown.exit_code == 0, shown.output
    assert dry.exit_code == 0, dry.output
    assert real.exit_code == 0, real.output
    assert len(json.loads(shown.output)["disclosures"]) == 1
    assert json.loads(dry.output)["dry_run"] is True
    assert "forgot 1 person(s) matched by mrn" in real.output
    scanner = DlpScanner(kinds=("email", "ssn"), exact=[target["email"], target["mrn"]])
    for output in (shown.output, dry.output, real.output):
        assert scanner.is_clean(output)

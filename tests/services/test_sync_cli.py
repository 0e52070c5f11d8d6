"""`hub sync` and `hub approve` against an isolated warehouse and the SANDBOX engine: the
review gate's exit code, the approval, the dry run kept for comparison, no PHI printed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.services.conftest import SECRET, TOKEN
from tests.services.population import add_people, define_audience

runner = CliRunner()


@pytest.fixture
def cli_env(sync_db, keyring, cipher, sandbox, monkeypatch):
    with sync_db.connect() as conn:
        conn.execute(
            "truncate activation.ledger, activation.sync_runs, activation.sync_state,"
            " activation.approvals, marts.segment_catalog, marts.audience_membership,"
            " intermediate.int_consent_events, vault.contacts, landing.person_xref"
        )
        conn.commit()
        add_people(conn, cipher, range(25))
        define_audience(conn, "winback", "marketing", range(25))
    engine = sandbox()
    for name, value in {
        "DATABASE_URL": sync_db.url(),
        "HUB_STATE_DIR": str(keyring),
        "HUB_ENGINE_URL": engine.base_url,
        "HUB_ENGINE_TOKEN": TOKEN,
        "HUB_ENGINE_SIGNING_SECRET": SECRET,
        "HUB_ENGINE_CA_FILE": str(engine.ca_cert_path),
    }.items():
        monkeypatch.setenv(name, value)
    return engine


def test_review_gate_approval_and_dry_run_comparison(cli_env):
    preview = runner.invoke(app, ["sync", "winback", "--to", "sandbox", "--dry-run", "--json"])
    assert preview.exit_code == 0, preview.output
    assert json.loads(preview.output)["added"] == 25

    blocked = runner.invoke(app, ["sync", "winback", "--to", "sandbox"])
    assert blocked.exit_code == 3, blocked.output
    assert "hub approve winback" in blocked.output

    approved = runner.invoke(
        app, ["approve", "winback", "--to", "sandbox", "--by", "Jane Reviewer", "--note", "ok"]
    )
    assert approved.exit_code == 0, approved.output
    assert "approved winback -> sandbox" in approved.output

    done = runner.invoke(app, ["sync", "winback", "--to", "sandbox"])
    assert done.exit_code == 0, done.output
    assert "pushed 25 adds" in done.output
    assert "expected 25 adds" in done.output  # the stored dry run, for comparison
    for output in (preview.output, blocked.output, done.output):
        assert "@" not in output and "Name1" not in output


def synced_members(sync_db, audience: str) -> int:
    with sync_db.connect() as conn:
        return conn.execute(
            "select count(*) from activation.sync_state where audience = %s", (audience,)
        ).fetchone()[0]


def test_on_a_terminal_a_real_sync_previews_and_asks_first(cli_env, sync_db, monkeypatch):
    """Declining pushes nothing; confirming pushes exactly what the preview showed."""
    assert (
        runner.invoke(
            app, ["approve", "winback", "--to", "sandbox", "--by", "Jane Reviewer", "--note", "ok"]
        ).exit_code
        == 0
    )
    monkeypatch.setattr("pipelines.cli._interactive", lambda: True)

    declined = runner.invoke(app, ["sync", "winback", "--to", "sandbox"], input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "winback -> sandbox: 25 adds" in declined.output
    assert "Nothing pushed." in declined.output
    assert synced_members(sync_db, "winback") == 0

    confirmed = runner.invoke(app, ["sync", "winback", "--to", "sandbox"], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "pushed 25 adds" in confirmed.output
    assert synced_members(sync_db, "winback") == 25

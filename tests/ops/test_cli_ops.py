"""`hub segments` and `hub journeys` against the suite's warehouse."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from services.journeys import REPO_JOURNEYS

pytestmark = pytest.mark.slow

runner = CliRunner()


@pytest.fixture
def hub(built, ops_warehouse, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", ops_warehouse.url())

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def test_segments_list_shows_size_purpose_exclusions_and_last_sync(hub, ops_warehouse):
    result = hub("segments", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["segment"]: row for row in json.loads(result.output)}
    with ops_warehouse.connect() as conn:
        sizes = dict(
            conn.execute(
                "select audience, count(*) from marts.audience_membership group by 1"
            ).fetchall()
        )
    assert rows and all(rows[name]["members"] == n for name, n in sizes.items())
    assert {row["purpose"] for row in rows.values()} >= {"treatment", "marketing"}
    assert any(row["last_sync"] for row in rows.values())
    table = hub("segments", "list")
    assert table.exit_code == 0 and "flu_vaccine_due" in table.output


def test_segments_show_gives_fields_syncs_per_destination_and_exclusions(hub):
    result = hub("segments", "show", "flu_vaccine_due", "--json")
    assert result.exit_code == 0, result.output
    detail = json.loads(result.output)
    assert detail["purpose"] == "treatment" and detail["size"] > 0
    assert detail["personalization_fields"] == ["given_name"]
    assert detail["last_sync_by_destination"]["sandbox"]["status"] in ("succeeded", "alert")
    assert sum(detail["exclusions_by_reason"].values()) >= 0
    text = hub("segments", "show", "flu_vaccine_due")
    assert text.exit_code == 0 and "personalization fields: given_name" in text.output
    assert "@" not in result.output + text.output


def test_an_unknown_segment_names_the_known_ones(hub):
    result = hub("segments", "show", "flu_vacine_due")
    assert result.exit_code == 1
    assert "no segment named 'flu_vacine_due'" in result.output
    assert "flu_vaccine_due" in result.output and "hub segments list" in result.output


def test_journeys_validate_accepts_the_shipped_journeys_and_names_bad_keys(hub, tmp_path):
    ok = hub("journeys", "validate")
    assert ok.exit_code == 0, ok.output
    assert "diabetes_education: ok" in ok.output and "post_visit_feedback: ok" in ok.output

    broken = yaml.safe_load((REPO_JOURNEYS / "post_visit_feedback.yaml").read_text())
    broken["steps"][1]["next"] = "settle"  # survey -> settle -> survey: a loop
    (tmp_path / "post_visit_feedback.yaml").write_text(yaml.safe_dump(broken))
    bad = hub("journeys", "validate", "--dir", str(tmp_path))
    assert bad.exit_code == 1
    assert "post_visit_feedback.yaml: steps: loop" in bad.output


def test_journeys_status_counts_people_per_journey(hub):
    result = hub("journeys", "status", "--json")
    assert result.exit_code == 0, result.output
    summary = {entry["journey"]: entry for entry in json.loads(result.output)}
    assert "diabetes_education" in summary
    assert sum(summary["diabetes_education"]["by_status"].values()) > 0

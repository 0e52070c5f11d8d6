"""The harness's bookkeeping without measuring anything: the time-budget planner, the
report block that leaves other sections alone, and supplementing one run with another."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report
from bench.plan import Estimator, plan_size
from bench.results import Results
from bench.steps import STEPS, Step


def _noop(ctx, r, profile) -> bool:
    return True


CHAIN = [
    Step("generate", _noop, (), 0),
    Step("ingest", _noop, ("generate",), 1),
    Step("dbt", _noop, ("ingest",), 2),
    Step("parse", _noop, ("generate",), 3),
]


def _estimator(seconds_at_10k: dict[str, float]) -> Estimator:
    estimator = Estimator()
    for name, seconds in seconds_at_10k.items():
        estimator.record(name, 10_000, seconds)
    return estimator


def test_cost_is_projected_linearly_from_one_size_and_fitted_from_two():
    step = CHAIN[1]
    estimator = _estimator({"ingest": 10.0})
    assert 100 < estimator.per_run(step, 100_000) < 130  # 10x the size, plus a safety margin
    estimator.record("ingest", 100_000, 55.0)  # 5 s fixed + 0.5 ms per patient
    assert 500 < estimator.per_run(step, 1_000_000) < 600


def test_a_short_budget_keeps_the_chain_by_priority_and_reports_what_it_left_out():
    estimator = _estimator({"generate": 1, "ingest": 10, "dbt": 10, "parse": 5})
    # Projected one run each (x1.15 margin): generate 11.5 s, ingest 115 s, dbt 115 s, parse 57.5 s
    runs, reasons = plan_size(CHAIN, 100_000, 3, 200, estimator)
    assert runs["generate"] >= 1 and runs["ingest"] == 1
    assert runs["dbt"] == 0 and "left out" in reasons["dbt"]
    assert runs["parse"] == 1  # lower priority, but it still fits beside the chain


def test_steps_that_need_a_left_out_step_are_left_out_too():
    estimator = _estimator({"generate": 1, "ingest": 1000, "dbt": 1, "parse": 1})
    runs, reasons = plan_size(CHAIN, 100_000, 3, 500, estimator)
    assert runs["ingest"] == 0
    assert runs["dbt"] == 0 and "needs ingest" in reasons["dbt"]
    assert runs["parse"] == 3  # cheap and independent: it gets every repeat


def test_without_a_budget_every_step_gets_every_repeat():
    runs, reasons = plan_size(STEPS, 1_000_000, 3, None, Estimator())
    assert set(runs.values()) == {3} and not reasons


def test_the_generated_block_replaces_only_itself():
    existing = (
        "# Benchmarks\n\nintro by hand\n\n"
        f"{report.BEGIN}\nold\n{report.END}\n\n## dbt build (by the dbt owner)\nkept\n"
    )
    merged = report.merge(existing, f"{report.BEGIN}\nnew\n{report.END}\n")
    assert "intro by hand" in merged and "## dbt build (by the dbt owner)\nkept" in merged
    assert "new" in merged and "old" not in merged


def test_a_report_without_markers_gets_the_block_appended():
    merged = report.merge("# Benchmarks\n\n## Sync (hand-written)\n", "BLOCK\n")
    assert merged.startswith("# Benchmarks\n\n## Sync (hand-written)") and "BLOCK" in merged


def _results(key: str, size: int, seconds: float, command: str) -> Results:
    results = Results()
    results.meta.update({"command": command, "started": "t", "steps": ["parse"], "sizes": [size]})
    results.add_run(key, size, {"seconds": seconds, "records": 100})
    return results


def test_a_supplementary_run_fills_gaps_but_never_replaces_a_figure():
    main = _results("parse.crm", 10_000, 1.0, "main")
    main.add_skip("parse", 100_000, "left out: time budget")
    extra = _results("parse.crm", 10_000, 9.0, "extra")
    extra.meta["sizes"] = [10_000, 100_000]
    extra.add_run("parse.crm", 100_000, {"seconds": 2.0, "records": 1000})
    main.supplement(extra)
    assert main.summary("parse.crm", 10_000).seconds == 1.0
    assert main.summary("parse.crm", 100_000).seconds == 2.0
    assert "supplementary run" in main.skipped("parse", 100_000)
    assert main.meta["supplements"][0]["figures"] == 1
    assert main.meta["supplements"][0]["command"] == "extra"


def test_a_re_measured_step_replaces_the_first_runs_figures_when_asked():
    main = _results("parse.crm", 10_000, 1.0, "main")
    newer = _results("parse.crm", 10_000, 3.0, "newer")
    main.supplement(newer, replace=True)
    main.meta["options"] = {"fhir_sample": 1, "hl7_sample": 1, "insert_rows": 1}
    assert main.summary("parse.crm", 10_000).seconds == 3.0
    assert main.meta["supplements"][0] == {
        "command": "newer", "started": "t", "figures": 1, "replaced": True
    }  # fmt: skip
    assert "re-measured" in report.render(main, None, Path("."))


def test_the_protect_notes_price_each_sources_crypto_calls_at_the_measured_limits():
    results = _results("limit.aesgcm", 10_000, 1.0, "main")  # 100 calls/s: 10,000 µs each
    results.add_run("limit.hmac_digest", 10_000, {"seconds": 2.0, "records": 100})
    results.add_run(
        "protect.records",
        10_000,
        {"seconds": 1.0, "records": 30, "per_source": {"crm": [10, 30, 40]}},
    )
    results.meta["machine"] = {"cores": 2}
    notes = "\n".join(report._crypto_floor(results, [10_000]))
    # 3 HMAC x 20,000 µs + 4 AES-GCM x 10,000 µs = 100,000 µs per row: 10 rows/s a core
    assert "CRM: 3.00 HMAC + 4.00 AES-GCM calls per row = 100000.00 µs" in notes
    assert "at most 10 rows/s per core and 20/s on all 2 cores" in notes


def test_the_protect_stage_is_priced_against_its_own_crypto_calls_alone():
    results = _results("limit.aesgcm", 10_000, 1.0, "main")  # 10,000 µs a call
    results.add_run("limit.hmac_digest", 10_000, {"seconds": 2.0, "records": 100})  # 20,000
    results.add_run("protect.records", 10_000, {"seconds": 2.0, "records": 30})
    results.add_run("protect.tokens", 10_000, {"seconds": 2.0, "records": 30})
    results.add_run("protect.vault", 10_000, {"seconds": 2.0, "records": 40})
    summary = results.summary("protect.records", 10_000)
    # 30 HMAC x 0.02 s + 40 AES-GCM x 0.01 s = 1 s of the 2 s the records took
    _, limits = report._comparisons(results, "protect.records", 10_000, summary)
    assert limits == "50.0% of its crypto calls alone"


def test_the_protection_target_uses_the_a_b_ingest_when_it_ran():
    from bench.protection_overhead import as_results

    report_json = {
        "ingest": {
            "patients": 200,
            "ingest": {
                "without protection": {"ingest seconds": 10.0, "records": 1000,
                                       "protect seconds": 2.0},
                "with protection": {"ingest seconds": 11.5, "records": 1000,
                                    "protect seconds": 3.5},
            },
        }
    }  # fmt: skip
    results = as_results(report_json, "python -m bench.protection_overhead", "t")
    results.add_run("protect.records", 200, {"seconds": 9.0, "records": 1000})
    rows = [line for line in report._targets(results, [200]) if "protection adds" in line]
    assert rows and "15% ✅" in rows[0]  # 11.5 s against 10 s, not the 9 s upper bound


def test_keep_needs_a_work_folder_and_reaches_the_steps(tmp_path):
    from bench import run

    with pytest.raises(SystemExit, match="--workdir"):
        run._settings(run.parse_args(["--keep"]), tmp_path)
    settings = run._settings(run.parse_args(["--keep", "--workdir", str(tmp_path)]), tmp_path)
    assert settings["options"].keep
    assert not run._settings(run.parse_args([]), tmp_path)["options"].keep


def test_dbt_threads_are_read_from_a_rotated_log_too(tmp_path):
    """A 1M build writes more than dbt's 10 MB log: its "Concurrency" line is then in
    dbt.log.1 (the report used to fall back to a wrong thread count)."""
    from bench.stages.model import _threads

    assert _threads(tmp_path) is None
    (tmp_path / "dbt.log").write_text("... 203 of 203 OK ...\n")
    (tmp_path / "dbt.log.1").write_text("Concurrency: 4 threads\n...\nConcurrency: 2 threads\n")
    assert _threads(tmp_path) == 2
    (tmp_path / "dbt.log").write_text("Concurrency: 3 threads (target='dev')\n")
    assert _threads(tmp_path) == 3

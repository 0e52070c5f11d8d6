"""`python -m bench.run`: measure every stage at each size, then write the report and chart.

    python -m bench.run                      # 10k, 100k, 1M patients; 3 runs; BENCHMARKS.md
    python -m bench.run --smoke              # 200 patients, 1 run, report in a temp folder
    python -m bench.run --sizes 10000 --only ingest,dbt_full --repeat 5 --out /tmp/b.md

Each measurement runs in a forked child (its own peak RSS); sizes run smallest first and the
time budget (default 45 minutes) decides, from the sizes already measured, how many runs
the larger sizes can afford. The report states every figure's run count and every step
left out. Generated data and databases live in a temporary work folder, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import machine, report
from bench.measure import idle_child_rss_mb
from bench.plan import Budget, Estimator, plan_size
from bench.results import Results
from bench.steps import STEP_NAMES, STEPS, Options, SizeContext, cleanup_size, with_prerequisites
from bench.workspace import environment

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
SMOKE_PATIENTS = 200
# The smoke run builds only the models the sync needs, without data tests: it proves the
# harness end to end in well under a minute; `make bench` always runs the full `dbt build`.
SMOKE_DBT = (
    "--select",
    "+segment_catalog +audience_membership +int_consent_events +int_consent_digests",
    "--exclude-resource-type",
    "test",
    "--exclude-resource-type",
    "unit_test",
)
SMOKE_DBT_INCREMENTAL = (
    "--select",
    "+int_consent_events +int_consent_digests",
    "--exclude-resource-type",
    "test",
    "--exclude-resource-type",
    "unit_test",
)
NON_FINAL_SHARE = 0.6
UNPROFILED = {
    "dbt_full",
    "dbt_incremental",
    "samples",
    "crypto",
    "ingest_strict",
}  # a size before the last may use at most this share of the time left


def _preload() -> None:
    """Import what most children need once, in the parent, so children start fast. Never
    polars (not fork-safe once its thread pool runs), dbt or fhir.resources."""
    import connectors.email.http_api
    import connectors.fhir
    import connectors.hl7.reader  # noqa: F401
    import domain.protect  # noqa: F401
    import services.feedback
    import services.identity
    import services.ingest
    import services.sync  # noqa: F401
    import synthetic.generate  # noqa: F401


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny size, 1 run, temp report")
    parser.add_argument("--sizes", help="patients per size, comma separated")
    parser.add_argument("--repeat", type=int, help="runs per figure (default 3; smoke 1)")
    parser.add_argument("--budget-minutes", type=float, help="0: no budget (default 45)")
    parser.add_argument("--only", help=f"steps to run (plus what they need): {STEP_NAMES}")
    parser.add_argument("--out", type=Path, help="report path (default BENCHMARKS.md)")
    parser.add_argument("--chart", type=Path, help="chart path (default bench/...png)")
    parser.add_argument("--workdir", type=Path, help="where data and databases go (temp)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile runs")
    parser.add_argument("--keep", action="store_true",
                        help="keep each size's data and warehouse in --workdir (to inspect "
                        "or re-run one stage by hand)")  # fmt: skip
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace, scratch: Path) -> dict:
    if args.smoke:
        defaults = {
            "sizes": [SMOKE_PATIENTS],
            "repeat": 1,
            "budget": None,
            "out": scratch / "BENCHMARKS.smoke.md",
            "chart": scratch / "cost_per_record.png",
            "results": scratch / "results.json",
            "options": Options(repeat=1, fhir_sample=300, hl7_sample=30, insert_rows=500,
                               crypto_calls=2_000, dbt_args=SMOKE_DBT,
                               dbt_incremental_args=SMOKE_DBT_INCREMENTAL,
                               profile_steps=("generate",)),
        }  # fmt: skip
    else:
        defaults = {
            "sizes": list(DEFAULT_SIZES),
            "repeat": 3,
            "budget": 45 * 60.0,
            "out": REPO / "BENCHMARKS.md",
            "chart": REPO / "bench" / "cost_per_record.png",
            "results": REPO / "bench" / "results.json",
            # Profiles are for the hub's own code. dbt spends its time in PostgreSQL, which
            # cProfile cannot see; the baselines and crypto limits are other people's code.
            "options": Options(profile_steps=tuple(n for n in STEP_NAMES if n not in UNPROFILED)),
        }
    if args.sizes:
        defaults["sizes"] = sorted(int(s.replace("_", "")) for s in args.sizes.split(","))
    if args.repeat:
        defaults["repeat"] = defaults["options"].repeat = args.repeat
    if args.budget_minutes is not None:
        defaults["budget"] = args.budget_minutes * 60 or None
    if args.out:
        defaults["out"] = args.out
        defaults["results"] = args.out.with_suffix(".json")
    if args.chart:
        defaults["chart"] = args.chart
    if args.keep:
        if not args.workdir:
            raise SystemExit("--keep needs --workdir (a temporary folder is always removed)")
        defaults["options"].keep = True
    return defaults


def _command(args: argparse.Namespace, settings: dict) -> str:
    parts = ["python -m bench.run"]
    if args.smoke:
        parts.append("--smoke")
    else:
        parts.append("--sizes " + ",".join(str(s) for s in settings["sizes"]))
        parts.append(f"--repeat {settings['repeat']}")
    if args.only:
        parts.append(f"--only {args.only}")
    return " ".join(parts)


def _stop_on_term(signum, frame) -> None:
    # SIGTERM becomes an exception, so `finally` blocks stop databases and engines.
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    environment()
    signal.signal(signal.SIGTERM, _stop_on_term)
    scratch = Path(tempfile.mkdtemp(prefix="bench-smoke-" if args.smoke else "bench-"))
    settings = _settings(args, scratch)
    steps = STEPS
    if args.only:
        wanted = with_prerequisites({s.strip() for s in args.only.split(",") if s.strip()})
        unknown = wanted - set(STEP_NAMES)
        if unknown:
            raise SystemExit(f"unknown steps {sorted(unknown)}; choose from {STEP_NAMES}")
        steps = [s for s in STEPS if s.name in wanted]
    work = args.workdir or scratch / "work"
    work.mkdir(parents=True, exist_ok=True)
    budget = Budget(settings["budget"])
    settings["results"].parent.mkdir(parents=True, exist_ok=True)
    results = Results(path=settings["results"])
    results.meta.update(
        {
            "command": _command(args, settings),
            "smoke": args.smoke,
            "sizes": settings["sizes"],
            "repeat": settings["repeat"],
            "budget_seconds": settings["budget"],
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine.describe(),
            "options": vars(settings["options"]),
            "steps": [s.name for s in steps],
        }
    )
    _preload()
    results.meta["idle_child_rss_mb"] = round(idle_child_rss_mb(), 1)
    estimator = Estimator()
    keyring = str(work / "keyring.json")
    dbt_target = str(work / "dbt-target")
    profile_size = None if args.no_profile else settings["sizes"][0]
    try:
        for index, size in enumerate(settings["sizes"]):
            final = index == len(settings["sizes"]) - 1
            _run_size(size, final, steps, settings, budget, estimator, results, work, keyring,
                      dbt_target, profile_size == size)  # fmt: skip
    finally:
        results.meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        results.meta["wall_seconds"] = round(time.monotonic() - budget.started, 1)
        results.save()
        report.write(results, settings["out"], settings["chart"], REPO)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"report: {settings['out']}")
    print(f"chart: {settings['chart']}")
    return settings["out"]


def _run_size(size, final, steps, settings, budget, estimator, results, work, keyring,
              dbt_target, profile) -> None:  # fmt: skip
    ctx = SizeContext(size, work / f"size-{size}", keyring, dbt_target, settings["options"],
                      results)  # fmt: skip
    ctx.work.mkdir(parents=True, exist_ok=True)
    remaining = budget.remaining()
    available = None if remaining is None else remaining * (1.0 if final else NON_FINAL_SHARE)
    runs, reasons = plan_size(steps, size, settings["repeat"], available, estimator)
    size_deadline = None if available is None else time.monotonic() + available
    _log(f"size {size:,}: plan {runs}")
    try:
        for step in steps:
            missing = [r for r in step.requires if r not in ctx.done]
            if missing:
                results.add_skip(step.name, size, f"not run: needs {', '.join(missing)}")
                continue
            if runs[step.name] == 0:
                results.add_skip(step.name, size, reasons.get(step.name, "left out"))
                continue
            profiled = settings["options"].profile_steps
            if profile and (profiled is None or step.name in profiled):
                _log(f"  {step.name}: profile run")
                step.run(ctx, 0, True)
            succeeded = 0
            for r in range(runs[step.name]):
                projected = estimator.per_run(step, size)
                left = None if size_deadline is None else size_deadline - time.monotonic()
                if left is not None and projected is not None and projected > left:
                    why = f"projected {projected:,.0f} s, {max(left, 0):,.0f} s of budget left"
                    if r == 0:
                        results.add_skip(step.name, size, f"left out: {why}")
                    else:
                        results.add_skip(step.name, size, f"{r} run(s) instead of "
                                         f"{settings['repeat']}: {why}")  # fmt: skip
                    break
                started = time.monotonic()
                ok = step.run(ctx, r, False)
                estimator.record(step.name, size, time.monotonic() - started)
                _log(f"  {step.name} run {r + 1}: {time.monotonic() - started:,.1f} s"
                     f"{'' if ok else ' (failed)'}")  # fmt: skip
                if not ok:
                    break
                succeeded += 1
            else:
                if step.name in reasons and runs[step.name] < settings["repeat"]:
                    results.add_skip(step.name, size, reasons[step.name])
            if succeeded:
                ctx.done.add(step.name)
    finally:
        cleanup_size(ctx)


def _log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "1")
    main()

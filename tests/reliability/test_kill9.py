"""kill -9 at random points of ingest, dbt and sync: each time, a rerun to completion must
leave exactly the state of an uninterrupted run: no duplicates, no losses, every sync ledger
row settled and every member delivered once.

Each kill starts a real child process against its own copy of a prepared warehouse (on the
session's PostgreSQL), SIGKILLs it after a random delay inside the work (delays are spread
over the measured length of an uninterrupted run), then reruns it to completion and
compares. The default run kills each stage once; `make soak` kills 22 times.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.email.http_api import HttpEngine
from connectors.warehouse.loader import load_file
from services.ingest import ingest_uris, read_units
from tests.reliability.conftest import (
    BUILD_SECONDS,
    DBT_DATABASE,
    ENGINE_SECRET,
    ENGINE_TOKEN,
    run_dbt_in_process,
)
from tests.reliability.support import (
    BULK_AUDIENCE,
    CountingDelivery,
    Databases,
    WorkerRun,
    add_bulk_audience,
    dbt_args,
    delivery_report,
    differences,
    kill_points,
    python_worker,
    run_worker,
    snapshot,
    worker_env,
)

INGESTED = ("landing", "vault", "quarantine")
MODELLED = ("staging", "intermediate", "marts", "reference")


class KillLoop:
    """Kill delays, and bookkeeping of kills that landed mid-work.

    Delays are stratified over the expected length of the work so early, middle and late
    kills all happen. A run that finishes before its signal teaches the loop the work is
    shorter than expected; the remaining delays shrink to fit, and a spare attempt replaces
    the one that did not land (at most three attempts per kill).
    """

    def __init__(self, stage: str, figures, kills: int, duration: float, seed: int) -> None:
        self.stage, self.figures, self.kills = stage, figures, kills
        self.rng = random.Random(seed)
        self.duration = duration
        self.points = kill_points(self.rng, duration, kills)
        self.rng.shuffle(self.points)
        self.attempts_left = 3 * kills
        self.landed = 0
        self.too_late = 0

    def delays(self) -> Iterator[float]:
        while self.landed < self.kills and self.attempts_left > 0:
            self.attempts_left -= 1
            yield self.points.pop() if self.points else self.rng.uniform(0, self.duration * 0.8)

    def record(self, run: WorkerRun) -> None:
        assert run.marker_seen, f"the {self.stage} child never said it was ready:\n{run.output}"
        if run.killed:
            self.landed += 1
            self.figures.add(f"kills_{self.stage}")
            return
        self.too_late += 1
        self.duration = min(self.duration, run.seconds)
        self.points = [min(p, self.rng.uniform(0, self.duration * 0.8)) for p in self.points]

    def survived(self, run: WorkerRun) -> None:
        """The rerun after `run` equalled an uninterrupted run (counted when a kill landed)."""
        if run.killed:
            self.figures.add("kills_survived")

    def check(self) -> None:
        assert self.landed == self.kills, f"only {self.landed} of {self.kills} kills landed"


def _lost(expected: dict[str, Counter], actual: dict[str, Counter]) -> int:
    return sum((expected[t] - actual.get(t, Counter())).total() for t in expected)


# --- ingest ----------------------------------------------------------------------------------


def _ingest_kills(databases, schema_template, population, cipher, figures, kills, seed, **extra):
    reference = databases.create("rel_kill_ingest_ref", template=schema_template)
    env = worker_env(reference.url(), **extra)
    clean = run_worker(python_worker("ingest", *population), env)
    assert clean.returncode == 0, clean.output[-3000:]
    with reference.connect() as conn:
        expected = snapshot(conn, cipher, INGESTED, audit=False)
    loop = KillLoop("ingest", figures, kills, clean.seconds, seed)
    for n, delay in enumerate(loop.delays()):
        name = f"rel_kill_ingest_{n}"
        warehouse = databases.create(name, template=schema_template)
        env = worker_env(warehouse.url(), **extra)
        interrupted = run_worker(python_worker("ingest", *population), env, kill_after=delay)
        _no_read_worker_outlives(interrupted)
        loop.record(interrupted)
        rerun = run_worker(python_worker("ingest", *population), env)
        assert rerun.returncode == 0, rerun.output[-3000:]
        with warehouse.connect() as conn:
            actual = snapshot(conn, cipher, INGESTED, audit=False)
            figures.add("records_lost", _lost(expected, actual))
            audited = Counter(
                action for (action,) in conn.execute("select action from audit.events")
            )
        assert not differences(expected, actual), (n, delay)
        assert audited["ingest"] == len(population)  # once per file: written with its load
        loop.survived(interrupted)
        databases.drop(name)
    loop.check()


def test_ingest_killed_at_a_random_point_then_rerun_equals_a_clean_run(
    databases: Databases, schema_template, population, cipher, figures
):
    _ingest_kills(databases, schema_template, population, cipher, figures, kills=1, seed=1)


def test_ingest_with_read_workers_killed_then_rerun_equals_a_clean_run(
    databases: Databases, schema_template, population, cipher, figures
):
    """Every file parsed and protected in a read worker process: the kill lands on the
    loading process, its workers leave with it, and the rerun equals a clean run."""
    _ingest_kills(
        databases, schema_template, population, cipher, figures, kills=1, seed=3,
        REL_READ_WORKER_MIN_BYTES="0",
    )  # fmt: skip


def _no_read_worker_outlives(run) -> None:
    """A killed loader's read workers end too: their pipe to it is gone."""
    if not run.killed:
        return
    for _ in range(100):
        left = [
            p
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _cmdline(p).count("connectors.warehouse.read_worker")
        ]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"{len(left)} read workers outlived the killed loader")


def _cmdline(process: Path) -> str:
    try:
        return (process / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.soak
def test_ingest_killed_8_times_then_rerun_equals_a_clean_run(
    databases: Databases, schema_template, population, cipher, figures
):
    _ingest_kills(databases, schema_template, population, cipher, figures, kills=8, seed=8)


def test_a_crash_between_load_and_audit_still_leaves_the_ingest_audited(
    databases: Databases, schema_template, population, protector
):
    warehouse = databases.create("rel_audit_gap", template=schema_template)
    uri = population[0]
    with warehouse.connect() as conn:
        # What ingest_uris does up to the crash: the file's own transaction commits...
        load_file(conn, uri=uri, source="crm", units=read_units(uri, "crm"), protector=protector)
        # ...and the process dies before the audit record's transaction. The rerun:
        [result] = ingest_uris(conn, [uri], protector)
        assert result.skipped
        audited = conn.execute(
            "select count(*) from audit.events where action = 'ingest'"
        ).fetchone()[0]
    assert audited == 1


# --- dbt -------------------------------------------------------------------------------------


def _dbt_kills(databases, landed_template, built_template, cipher, figures, workdir, kills, seed):
    """`dbt build` (seeds, models, tests: what the pipeline runs) killed mid-way, then rerun.

    The expected state is the session's built template (an uninterrupted `dbt build` of the
    same landed data); delays spread over that build's measured length.
    """
    with databases.create("rel_kill_dbt_view", template=built_template).connect() as conn:
        expected = snapshot(conn, cipher, MODELLED, audit=False)
    databases.drop("rel_kill_dbt_view")
    # The in-process template build also parsed the project: the models take about half.
    loop = KillLoop("dbt", figures, kills, BUILD_SECONDS.get(built_template, 20.0) * 0.5, seed)
    for n, delay in enumerate(loop.delays()):
        warehouse = databases.create(DBT_DATABASE, template=landed_template)
        env = worker_env(warehouse.url(), **warehouse.dbt_env())
        args = dbt_args("build", workdir)
        interrupted = run_worker(args, env, delay, ready_marker=" START ")
        loop.record(interrupted)
        # The rerun is the same `dbt build`, in this process: it skips an interpreter start
        # and reuses the session's parse (the killed child may have left target/ half-written;
        # dbt must cope with that too).
        rerun = run_dbt_in_process(warehouse, workdir, "build")
        assert rerun.success, rerun.exception
        with warehouse.connect() as conn:
            actual = snapshot(conn, cipher, MODELLED, audit=False)
        figures.add("records_lost", _lost(expected, actual))
        assert not differences(expected, actual), (n, delay)
        loop.survived(interrupted)
        databases.drop(DBT_DATABASE)
    loop.check()


def test_dbt_killed_at_a_random_point_then_rerun_equals_a_clean_build(
    databases, landed_template, built_template, cipher, figures, dbt_workdir
):
    _dbt_kills(databases, landed_template, built_template, cipher, figures, dbt_workdir, 1, 2)


@pytest.mark.soak
def test_dbt_killed_7_times_then_rerun_equals_a_clean_build(
    databases, landed_template, built_template, cipher, figures, dbt_workdir
):
    _dbt_kills(databases, landed_template, built_template, cipher, figures, dbt_workdir, 7, 7)


# --- sync ------------------------------------------------------------------------------------

SYNC_MEMBERS = 400
SYNC_BATCH = 10


def _sync_run(databases, built_template, cipher, sandbox, name, delay):
    warehouse = databases.create(name, template=built_template)
    with warehouse.connect() as conn:
        people = add_bulk_audience(conn, cipher, SYNC_MEMBERS)
    delivery = CountingDelivery()
    engine = sandbox(delivery=delivery)
    env = worker_env(
        warehouse.url(),
        REL_ENGINE_URL=engine.base_url,
        REL_ENGINE_CA_FILE=str(engine.ca_cert_path),
        REL_ENGINE_TOKEN=ENGINE_TOKEN,
        REL_ENGINE_SECRET=ENGINE_SECRET,
    )
    args = python_worker("sync", BULK_AUDIENCE, "--batch-size", str(SYNC_BATCH))
    first = run_worker(args, env, kill_after=delay)
    if delay is not None or first.returncode != 0:
        rerun = run_worker(args, env)
        assert rerun.returncode == 0, rerun.output[-3000:]
    api = HttpEngine(engine.base_url, ENGINE_TOKEN, ENGINE_SECRET, str(engine.ca_cert_path))
    with warehouse.connect() as conn:
        report = delivery_report(
            conn,
            api.list_member_ids(BULK_AUDIENCE),
            delivery.of(BULK_AUDIENCE),
            BULK_AUDIENCE,
            set(people),
        )
    engine.stop()
    databases.drop(name)
    return first, report


def _sync_kills(databases, built_template, cipher, sandbox, figures, kills, seed):
    clean, report = _sync_run(databases, built_template, cipher, sandbox, "rel_kill_sync_ref", None)
    assert clean.returncode == 0, clean.output[-3000:]
    loop = KillLoop("sync", figures, kills, clean.seconds, seed)
    for n, delay in enumerate(loop.delays()):
        first, report = _sync_run(
            databases, built_template, cipher, sandbox, f"rel_kill_sync_{n}", delay
        )
        loop.record(first)
        figures.add("members_lost", report.lost)
        figures.add("members_duplicated", report.duplicated)
        assert report.lost == report.duplicated == report.extra_at_engine == 0, (n, report)
        assert report.pending_ledger_rows == 0 and report.people_not_acked_once == 0, report
        loop.survived(first)
    loop.check()


def test_sync_killed_at_a_random_point_then_rerun_delivers_each_member_once(
    databases, built_template, cipher, sandbox, figures
):
    _sync_kills(databases, built_template, cipher, sandbox, figures, kills=1, seed=3)


@pytest.mark.soak
def test_sync_killed_7_times_then_rerun_delivers_each_member_once(
    databases, built_template, cipher, sandbox, figures
):
    _sync_kills(databases, built_template, cipher, sandbox, figures, kills=7, seed=9)

"""Modelling stages: identity resolution, `dbt build` (full and incremental) and the
database's floor for any build: reading every landing row once."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from time import perf_counter

from bench.measure import StageResult
from bench.stages.protect import protector_from

PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"


def _dbt_landing_tables(conn) -> list[str]:
    """The landing tables dbt reads (all but the sync's change log)."""
    return [
        name
        for (name,) in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'landing'"
            " and table_type = 'BASE TABLE' and table_name <> 'person_changes'"
        )
    ]


def landing_rows(conn) -> int:
    return sum(
        conn.execute(f"select count(*) from landing.{t}").fetchone()[0]
        for t in _dbt_landing_tables(conn)
    )


def resolve(warehouse, keyring: str) -> StageResult:
    """services.identity.resolve_persons over everything landed (recomputed from scratch)."""
    from domain.policy import default_policy
    from services.identity import resolve_persons

    tokenizer = protector_from(keyring).tokenizer
    with warehouse.connect() as conn:
        started = perf_counter()
        report = resolve_persons(conn, tokenizer, default_policy())
        seconds = perf_counter() - started
    return {"seconds": seconds, "records": report.subjects, "persons": report.persons}


def read_identity_keys(warehouse) -> StageResult:
    """Limit for identity resolution: PostgreSQL streaming every identity key to the client
    once, in the key order resolution reads them (server-side cursor), nothing done with
    them. Per subject, as resolution counts."""
    from services.identity import IDENTITY_KEYS_IN_ORDER

    with warehouse.connect() as conn:
        (subjects,) = conn.execute(
            "select count(distinct subject_token) from vault.identity_keys"
        ).fetchone()
        started = perf_counter()
        with conn.cursor("bench_identity_keys") as keys:
            keys.execute(IDENTITY_KEYS_IN_ORDER)
            while keys.fetchmany(50_000):
                pass
        seconds = perf_counter() - started
    return {"seconds": seconds, "records": subjects}


def dbt_build(
    warehouse, target_dir: str, full_refresh: bool, extra: tuple[str, ...] = ()
) -> StageResult:
    """`dbt build` in process (dbtRunner), against the warehouse through Warehouse.dbt_env()."""
    os.environ.update(warehouse.dbt_env())
    os.environ["DO_NOT_TRACK"] = "1"
    from dbt.cli.main import dbtRunner

    with warehouse.connect() as conn:
        rows = landing_rows(conn)
    where = ["--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR)]
    where += ["--target-path", target_dir, "--log-path", target_dir]
    # Untimed: parse first, as a Dagster deployment has before any run (dagster-dbt copies the
    # project's partial_parse.msgpack into each run's target), so every repeat times the
    # build operators see, with a partial parse, not a first-ever full one (about 5 s).
    dbtRunner().invoke(["parse", "--quiet", *where])
    args = ["build", "--quiet", *where]
    if full_refresh:
        args.append("--full-refresh")
    args += list(extra)
    started = perf_counter()
    result = dbtRunner().invoke(args)
    seconds = perf_counter() - started
    if not result.success:
        failed = []
        for node in getattr(result.result, "results", None) or []:
            if str(node.status) in ("error", "fail"):
                failed.append(node.node.unique_id)
        raise RuntimeError(f"dbt build failed: {result.exception or ''} {failed[:10]}")
    nodes = len(getattr(result.result, "results", None) or [])
    return {
        "seconds": seconds,
        "records": rows,
        "nodes": nodes,
        "incremental_models": _incremental_models(Path(target_dir)),
        "slowest_nodes": _slowest_nodes(Path(target_dir)),
        "threads": _threads(Path(target_dir)),
    }


def _slowest_nodes(target: Path, top: int = 8) -> list[tuple[str, float]]:
    """dbt's own timing of its slowest nodes (run_results.json): where a build's time goes,
    which a Python profile cannot show because the work happens in PostgreSQL."""
    import orjson

    path = target / "run_results.json"
    if not path.exists():
        return []
    results = orjson.loads(path.read_bytes()).get("results", [])
    timed = sorted(results, key=lambda r: -(r.get("execution_time") or 0))[:top]
    return [(r["unique_id"], round(r.get("execution_time") or 0, 2)) for r in timed]


def _threads(target: Path) -> int | None:
    """How many threads dbt ran (its log's last "Concurrency: N threads" line; run_results.json
    only has the count when --threads was given): node times are shared-core times."""
    # dbt rotates its log at 10 MB (dbt.log.1, .2, ...): a 1M build's start, where the
    # line is, may already be in a rotated file.
    logs = [target / "dbt.log", *(target / f"dbt.log.{n}" for n in range(1, 6))]
    for log in logs:
        if log.exists():
            found = re.findall(r"Concurrency: (\d+) threads", log.read_text(errors="replace"))
            if found:
                return int(found[-1])
    return None


def _incremental_models(target: Path) -> int:
    import orjson

    manifest = target / "manifest.json"
    if not manifest.exists():
        return 0
    nodes = orjson.loads(manifest.read_bytes()).get("nodes", {})
    return sum(
        1
        for node in nodes.values()
        if node.get("resource_type") == "model"
        and node.get("config", {}).get("materialized") == "incremental"
    )


def dbt_incremental(
    warehouse,
    target_dir: str,
    keyring: str,
    delta_patients: int,
    seed: int,
    extra: tuple[str, ...] = (),
) -> StageResult:
    """A new 1% delivery (generated with another seed) is ingested and resolved (untimed),
    then `dbt build` without --full-refresh is timed."""
    from domain.policy import default_policy
    from services.identity import resolve_persons
    from services.ingest import ingest_uris
    from synthetic.generate import generate

    folder = tempfile.mkdtemp(prefix="bench-delta-")
    try:
        generate(Path(folder), patients=delta_patients, seed=seed)
        files = [str(p) for p in sorted(Path(folder).rglob("*")) if p.suffix in _DATA_SUFFIXES]
        protector = protector_from(keyring)
        with warehouse.connect() as conn:
            ingest_uris(conn, files, protector)
            resolve_persons(conn, protector.tokenizer, default_policy())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = dbt_build(warehouse, target_dir, False, extra)
    out["delta_patients"] = delta_patients
    return out


_DATA_SUFFIXES = {".ndjson", ".hl7", ".csv"}


def read_landing(warehouse) -> StageResult:
    """Limit for dbt: PostgreSQL reading every landing row once (count(*) per table)."""
    with warehouse.connect() as conn:
        tables = _dbt_landing_tables(conn)
        rows = 0
        started = perf_counter()
        for table in tables:
            rows += conn.execute(f"select count(*) from landing.{table}").fetchone()[0]
        seconds = perf_counter() - started
    return {"seconds": seconds, "records": rows}

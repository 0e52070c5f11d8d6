"""`python -m bench.remeasure WORKDIR SIZE --out FILE`: measure the dbt, sync or events steps
again on a size that `python -m bench.run --keep --workdir WORKDIR` left on disk (its
warehouse and keyring), for example after a model or sync change, without generating,
ingesting and resolving it again (about half an hour at 1M). The results file goes into the
report as a supplement: `python -m bench.report bench/results.json --replace FILE --out
BENCHMARKS.md`.

Each incremental dbt repeat ingests another 1% delivery into the kept warehouse, as the
harness does; the full builds run first, so they all see the same data. Each full sync
goes to a fresh SANDBOX engine under a destination name the kept warehouse has not seen
(`remeasure-<time>-<run>`), so every member is an add, as in the harness; the 1%-changed
syncs, the re-push baseline (with the engine's own limit) and the events readback (the
events that engine made of its sends, by polling and from a tracking extract) follow the
last of them."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from bench import machine
from bench.results import Results
from bench.steps import (
    Options,
    SizeContext,
    _dbt_full,
    _dbt_incremental,
    _events,
    _sync_full,
    _sync_incremental,
    _sync_repush,
)
from connectors.warehouse.database import Warehouse
from connectors.warehouse.embedded import start_embedded, stop_embedded


def _kept_database(url: str) -> str:
    """The one bench database of the kept server (the harness names them bench_<label>_<n>)."""
    with psycopg.connect(url) as conn:
        names = [row[0] for row in conn.execute(
            "select datname from pg_database where datname like 'bench\\_%' order by datname"
        )]  # fmt: skip
    if len(names) != 1:
        raise SystemExit(f"expected one bench database on the kept server, found {names}")
    return names[0]


# The steps it can measure again, in the order they run.
STEPS = {
    "dbt_full": _dbt_full,
    "dbt_incremental": _dbt_incremental,
    "sync_full": _sync_full,
    "sync_incremental": _sync_incremental,
    "sync_repush": _sync_repush,
    "events": _events,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path, help="the --workdir of a `bench.run --keep` run")
    parser.add_argument("size", type=int, help="patients of the kept size, e.g. 1000000")
    parser.add_argument("--out", type=Path, required=True, help="results file to write")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--only", default="dbt_full,dbt_incremental",
                        help=f"any of {', '.join(STEPS)}")  # fmt: skip
    args = parser.parse_args()
    steps = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = steps - set(STEPS)
    if unknown:
        raise SystemExit(f"unknown steps {sorted(unknown)}: only {', '.join(STEPS)}")
    if steps & {"sync_incremental", "sync_repush", "events"} and "sync_full" not in steps:
        raise SystemExit(
            "sync_incremental, sync_repush and events follow a full sync: add sync_full"
        )

    pgdata = args.workdir / f"size-{args.size}" / "pg" / "pg"
    if not pgdata.is_dir():
        raise SystemExit(f"no kept warehouse at {pgdata}: run bench.run with --keep first")
    base = start_embedded(pgdata, keep_running=True)
    try:
        # The same server, another database (as bench.workspace.EmbeddedServer does).
        name = _kept_database(urlparse(base)._replace(path="/postgres").geturl())
        warehouse = Warehouse(database_url=urlparse(base)._replace(path=f"/{name}").geturl())
        options = Options(repeat=args.repeat)
        results = Results(path=args.out)
        results.meta.update({
            "command": "python -m bench.remeasure " + " ".join(
                [str(args.workdir), str(args.size), "--only", ",".join(sorted(steps)),
                 "--repeat", str(args.repeat)]),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine.describe(),
            "sizes": [args.size],
            "repeat": args.repeat,
            "steps": sorted(steps),
        })  # fmt: skip
        ctx = SizeContext(
            size=args.size,
            work=args.workdir,
            keyring=str(args.workdir / "keyring.json"),
            dbt_target=str(args.workdir / "dbt-target"),
            options=options,
            results=results,
            warehouse=warehouse,
            destination_prefix=f"remeasure-{datetime.now(UTC):%Y%m%dT%H%M%S}",
        )
        try:
            for step, measure in STEPS.items():
                if step in steps:
                    for r in range(args.repeat):
                        measure(ctx, r, False)
        finally:
            ctx.close()  # the SANDBOX engine, if a sync step started one
        results.meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        results.save()
    finally:
        stop_embedded(pgdata)


if __name__ == "__main__":
    main()

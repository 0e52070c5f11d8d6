"""`python -m bench.remeasure WORKDIR SIZE --out FILE`: measure the dbt steps again on a size
that `python -m bench.run --keep --workdir WORKDIR` left on disk (its warehouse and keyring),
for example after a model change, without generating, ingesting and resolving it again
(about half an hour at 1M). The results file goes into the report as a supplement:
`python -m bench.report bench/results.json --replace FILE --out BENCHMARKS.md`.

Each incremental repeat ingests another 1% delivery into the kept warehouse, as the harness
does; the full builds run first, so they all see the same data."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from bench import machine
from bench.results import Results
from bench.steps import Options, SizeContext, _dbt_full, _dbt_incremental
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path, help="the --workdir of a `bench.run --keep` run")
    parser.add_argument("size", type=int, help="patients of the kept size, e.g. 1000000")
    parser.add_argument("--out", type=Path, required=True, help="results file to write")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--only", default="dbt_full,dbt_incremental",
                        help="dbt_full and/or dbt_incremental")  # fmt: skip
    args = parser.parse_args()
    steps = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = steps - {"dbt_full", "dbt_incremental"}
    if unknown:
        raise SystemExit(f"unknown steps {sorted(unknown)}: only the dbt steps are re-measured")

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
        )
        for step, measure in (("dbt_full", _dbt_full), ("dbt_incremental", _dbt_incremental)):
            if step in steps:
                for r in range(args.repeat):
                    measure(ctx, r, False)
        results.meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        results.save()
    finally:
        stop_embedded(pgdata)


if __name__ == "__main__":
    main()

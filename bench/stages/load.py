"""Loading stages: ingest into a fresh warehouse, and the database's own write limits
(COPY of the rows ingest wrote, row-by-row INSERT versus COPY of the same rows)."""

from __future__ import annotations

import os
import tempfile
from time import perf_counter

from bench.measure import StageResult
from bench.stages.protect import protector_from


def ingest(warehouse, files: list[str], source: str, mode: str, keyring: str) -> StageResult:
    """services.ingest.ingest_uris: connector, protection and COPY loading, file by file."""
    from services.ingest import ingest_uris

    warm_up(source, mode)
    protector = protector_from(keyring)
    with warehouse.connect() as conn:
        started = perf_counter()
        results = ingest_uris(conn, files, protector, source, fhir_mode=mode)
        seconds = perf_counter() - started
    return {
        "seconds": seconds,
        "records": sum(r.read for r in results),
        "loaded": sum(r.loaded for r in results),
        "quarantined": sum(r.quarantined for r in results),
        "reconciled": all(r.reconciled for r in results),
        "rows": sum(sum(r.rows_by_entity.values()) for r in results),
    }


FHIR_TYPES = ("Patient", "Condition", "Encounter", "Observation", "MedicationRequest",
              "Immunization", "Procedure", "Appointment", "Consent")  # fmt: skip


def warm_up(source: str, mode: str = "fast") -> None:
    """Import what a connector loads lazily (polars, the fhir.resources models), so a
    one-off import is not billed to the records of a small size."""
    if source == "crm":
        import connectors.crm
    elif source == "hl7":
        import connectors.hl7.reader
    elif source == "fhir":
        import connectors.fhir  # noqa: F401

        if mode == "strict":
            from fhir.resources.R4B import get_fhir_model_class

            for resource_type in FHIR_TYPES:
                get_fhir_model_class(resource_type)


def _landing_tables(conn) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'landing'"
            " and table_type = 'BASE TABLE' and table_name not in"
            " ('source_files', 'person_xref', 'person_changes', 'merges') order by table_name"
        )
    ]


def copy_limit(warehouse, source: str, records: int) -> StageResult:
    """Limit: COPY (binary) of the landing and quarantine rows this source produced, into
    empty tables of the same shape. Rows are dumped first (untimed), then loaded (timed)."""
    with warehouse.connect() as conn:
        conn.execute("drop schema if exists bench_copy cascade; create schema bench_copy")
        tables = [f"landing.{t}" for t in _landing_tables(conn)] + ["quarantine.records"]
        dumps: list[tuple[str, str]] = []
        rows = 0
        with tempfile.TemporaryDirectory(prefix="bench-copy-") as folder:
            for index, table in enumerate(tables):
                count = conn.execute(
                    f"select count(*) from {table} where source = %s", (source,)
                ).fetchone()[0]
                if not count:
                    continue
                rows += count
                clone = f"bench_copy.t{index}"
                conn.execute(f"create table {clone} (like {table})")
                path = os.path.join(folder, f"t{index}.bin")
                with open(path, "wb") as sink, conn.cursor() as cur:
                    query = (
                        f"copy (select * from {table} where source = %s) to stdout (format binary)"
                    )
                    with cur.copy(query, (source,)) as copy:
                        for block in copy:
                            sink.write(block)
                dumps.append((clone, path))
            conn.commit()
            started = perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                for clone, path in dumps:
                    with (
                        open(path, "rb") as dump,
                        cur.copy(f"copy {clone} from stdin (format binary)") as copy,
                    ):
                        while block := dump.read(1 << 20):
                            copy.write(block)
            seconds = perf_counter() - started
        conn.execute("drop schema bench_copy cascade")
        conn.commit()
    return {"seconds": seconds, "records": records, "rows": rows}


def insert_versus_copy(warehouse, cap: int) -> StageResult:
    """Baseline for loading: the same landed rows written by one INSERT per row (one
    transaction) and by COPY, each into empty tables of the landing shape."""
    with warehouse.connect() as conn:
        tables = _landing_tables(conn)
        per_table = max(1, cap // max(1, len(tables)))
        conn.execute("drop schema if exists bench_rows cascade; create schema bench_rows")
        samples: list[tuple[str, list[str], list[tuple]]] = []
        for table in tables:
            cur = conn.execute(f"select * from landing.{table} limit %s", (per_table,))
            rows = cur.fetchall()
            if not rows:
                continue
            columns = [d.name for d in cur.description]
            for kind in ("ins", "cpy"):
                conn.execute(f"create table bench_rows.{kind}_{table} (like landing.{table})")
            samples.append((table, columns, rows))
        conn.commit()
        total = sum(len(rows) for _, _, rows in samples)

        started = perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            for table, columns, rows in samples:
                listed = ", ".join(columns)
                marks = ", ".join(["%s"] * len(columns))
                statement = f"insert into bench_rows.ins_{table} ({listed}) values ({marks})"
                for row in rows:
                    cur.execute(statement, row)
        insert_seconds = perf_counter() - started

        started = perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            for table, columns, rows in samples:
                statement = f"copy bench_rows.cpy_{table} ({', '.join(columns)}) from stdin"
                with cur.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
        copy_seconds = perf_counter() - started
        conn.execute("drop schema bench_rows cascade")
        conn.commit()
    return {
        "figures": {
            "baseline.insert_rows": {"seconds": insert_seconds, "records": total},
            "load.copy_rows": {"seconds": copy_seconds, "records": total},
        }
    }

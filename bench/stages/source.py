"""Source-side stages: generating data, parsing it without a database, and the limits of
reading (and writing) the same bytes."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from time import perf_counter

from bench.measure import StageResult

CHUNK = 1 << 20


def generate_data(out_dir: str, patients: int, seed: int) -> StageResult:
    """synthetic.generate.generate into an empty folder."""
    from synthetic.generate import generate

    shutil.rmtree(out_dir, ignore_errors=True)
    started = perf_counter()
    summary = generate(Path(out_dir), patients=patients, seed=seed)
    seconds = perf_counter() - started
    return {"seconds": seconds, "records": summary.total_records, "unit_note": "records written"}


def write_bytes(folder: str, nbytes: int, records: int) -> StageResult:
    """Limit for generate: writing the same number of bytes in 1 MB chunks (no fsync)."""
    block = b"\0" * CHUNK
    fd, path = tempfile.mkstemp(dir=folder, prefix="bench-write-")
    try:
        started = perf_counter()
        with os.fdopen(fd, "wb") as handle:
            left = nbytes
            while left > 0:
                handle.write(block if left >= CHUNK else block[:left])
                left -= CHUNK
        seconds = perf_counter() - started
    finally:
        os.unlink(path)
    return {"seconds": seconds, "records": records, "bytes": nbytes}


def cat_bytes(files: list[str], records: int) -> StageResult:
    """Limit: `cat FILES > /dev/null` (from the page cache: the files were just written)."""
    started = perf_counter()
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
    return {"seconds": perf_counter() - started, "records": records}


def read_bytes(files: list[str], records: int) -> StageResult:
    """Limit: reading the same files in Python, 1 MB at a time."""
    total = 0
    started = perf_counter()
    for name in files:
        with open(name, "rb", buffering=0) as handle:
            while chunk := handle.read(CHUNK):
                total += len(chunk)
    return {"seconds": perf_counter() - started, "records": records, "bytes": total}


def orjson_lines(files: list[str]) -> StageResult:
    """Limit for FHIR: orjson.loads of every NDJSON line (bad lines count, as they cost too)."""
    import orjson

    loads, error = orjson.loads, orjson.JSONDecodeError
    lines = 0
    started = perf_counter()
    for name in files:
        with open(name, "rb") as handle:
            for line in handle:
                lines += 1
                with contextlib.suppress(error):
                    loads(line)
    return {"seconds": perf_counter() - started, "records": lines}


def parse_fhir(files: list[str], mode: str) -> StageResult:
    """The FHIR connector alone (no protection, no database): records and rejections."""
    from bench.stages.load import warm_up
    from connectors.fhir import read_fhir

    warm_up("fhir", mode)
    items = 0
    started = perf_counter()
    for name in files:
        for _ in read_fhir(name, mode=mode):  # type: ignore[arg-type]
            items += 1
    return {"seconds": perf_counter() - started, "records": items}


def parse_hl7(files: list[str]) -> StageResult:
    """The HL7 connector alone: framing, fast parse and mapping of every message."""
    from connectors.hl7.reader import read_hl7

    messages = records = 0
    started = perf_counter()
    for name in files:
        for message in read_hl7(name):
            messages += 1
            records += len(message.records)
    return {"seconds": perf_counter() - started, "records": messages, "source_records": records}


def parse_crm(files: list[str]) -> StageResult:
    """The CRM connector alone, as ingest uses it (read_crm with the chosen mapping)."""
    from connectors.crm import choose_mapping, read_crm

    rows = 0
    started = perf_counter()
    for name in files:
        for _ in read_crm(name, choose_mapping(name)):
            rows += 1
    return {"seconds": perf_counter() - started, "records": rows}


def pandas_csv(files: list[str]) -> StageResult:
    """Baseline for CRM: pandas.read_csv of the same file, every column as text."""
    import pandas

    rows = 0
    started = perf_counter()
    for name in files:
        frame = pandas.read_csv(name, dtype=str, keep_default_na=False, on_bad_lines="skip")
        rows += len(frame)
    return {"seconds": perf_counter() - started, "records": rows}


def polars_csv(files: list[str]) -> StageResult:
    """Baseline for CRM: polars.read_csv of the same file, every column as text."""
    import polars

    rows = 0
    started = perf_counter()
    for name in files:
        frame = polars.read_csv(name, infer_schema=False, truncate_ragged_lines=True)
        rows += frame.height
    return {"seconds": perf_counter() - started, "records": rows}

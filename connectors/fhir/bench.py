"""Throughput benchmark for read_fhir on replicated Synthea bulk NDJSON, on one core.

Run: .venv/bin/python -m connectors.fhir.bench [--lines 300000] [--strict-lines 20000]
     [--source ../shared/data/fhir/bulk-ndjson-10-patients]

The resource files the hub ingests (Patient, Condition, Encounter, Immunization,
MedicationRequest, Procedure) are concatenated and repeated into one temporary NDJSON file
(deleted afterwards), then read end to end: open, parse, check, extract, SourceRecord.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from connectors.fhir import read_fhir

_TYPES = ("Patient", "Condition", "Encounter", "Immunization", "MedicationRequest", "Procedure")
_DEFAULT_SOURCE = Path(__file__).resolve().parents[3] / "shared/data/fhir/bulk-ndjson-10-patients"


def _replicate(source: Path, lines: int, out: Path) -> int:
    block = b"".join((source / f"{t}.000.ndjson").read_bytes() for t in _TYPES)
    per_block = block.count(b"\n")
    with out.open("wb") as f:
        for _ in range(max(1, lines // per_block)):
            f.write(block)
    return out.stat().st_size


def _measure(path: Path, mode: str) -> tuple[int, float]:
    start = time.perf_counter()
    n = sum(1 for _ in read_fhir(str(path), mode=mode))  # type: ignore[arg-type]
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--strict-lines", type=int, default=20_000)
    parser.add_argument("--source", type=Path, default=_DEFAULT_SOURCE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for mode, lines in (("fast", args.lines), ("strict", args.strict_lines)):
            path = Path(tmp) / f"{mode}.ndjson"
            size = _replicate(args.source, lines, path)
            n, seconds = _measure(path, mode)
            print(
                f"read_fhir {mode:6}: {n:,} resources ({size / n:,.0f} B avg) in {seconds:.2f} s"
                f" = {n / seconds:,.0f} resources/s"
            )


if __name__ == "__main__":
    main()

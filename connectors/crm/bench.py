"""Throughput benchmark for the CRM reader on a generator-shaped contacts CSV.

Run: .venv/bin/python -m connectors.crm.bench [--rows 1000000]

Writes a temporary CSV in the synthetic generator's column layout (docs/data-contracts.md;
quoted notes with commas and line breaks, ISO timestamps), then reads it with the `contacts`
mapping through both APIs: `read_crm_frames` (typed polars batches, what a loader should use)
and `read_crm` (one SourceRecord per row). The file is deleted afterwards.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from connectors.crm import builtin_mapping, read_crm, read_crm_frames

_HEADER = (
    "contact_id", "email", "first_name", "last_name", "phone", "birth_date", "postal_code",
    "mrn", "mrn_authority", "email_opt_in", "marketing_auth_signed", "marketing_auth_expires",
    "marketing_auth_revoked", "unsubscribed_at", "notes", "updated_at",
)  # fmt: skip
_NOTES = ("", "", "", "Prefers email, not phone", 'Asked about the "Healthy Heart" letter',
          "Follow up in spring\nre: knee surgery consult")  # fmt: skip


def write_contacts(path: Path, rows: int, seed: int = 7) -> None:
    """`rows` contact rows in the generator's shape."""
    rnd = random.Random(seed)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    day0 = date(1940, 1, 1)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(_HEADER)
        for i in range(rows):
            signed = date(2023, 1, 1) + timedelta(days=rnd.randrange(700))
            stamp = base + timedelta(seconds=rnd.randrange(10**7))
            w.writerow((
                f"C{100_000_000 + i}", f"person.{i}@example.org", "Ana", "O'Neil",
                f"(555) {rnd.randrange(10**7):07d}",
                (day0 + timedelta(days=rnd.randrange(25_000))).isoformat(),
                f"{rnd.randrange(10**5):05d}", f"{rnd.randrange(10**8):08d}", "HUBHOSP",
                "yes" if rnd.random() < 0.85 else "no",
                signed.isoformat(), (signed + timedelta(days=730)).isoformat(), "",
                stamp.strftime("%Y-%m-%dT%H:%M:%SZ") if rnd.random() < 0.05 else "",
                rnd.choice(_NOTES), stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    mapping = builtin_mapping("contacts")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "contacts.csv"
        write_contacts(path, args.rows)
        uri = str(path)

        start = time.perf_counter()
        n = sum(b.frame.height + len(b.rejections) for b in read_crm_frames(uri, mapping))
        seconds = time.perf_counter() - start
        print(f"read_crm_frames: {n:,} rows in {seconds:.2f} s = {n / seconds:,.0f} rows/s")

        start = time.perf_counter()
        n = sum(1 for _ in read_crm(uri, mapping))
        seconds = time.perf_counter() - start
        print(f"read_crm       : {n:,} rows in {seconds:.2f} s = {n / seconds:,.0f} rows/s")


if __name__ == "__main__":
    main()

"""`python -m synthetic --patients N --seed S --out DIR [--as-of YYYY-MM-DD]`."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from synthetic.generate import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synthetic", description=__doc__)
    parser.add_argument("--patients", type=int, required=True, help="number of patients")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--as-of",
        type=date.fromisoformat,
        default=None,
        help="anchor day for clinical dates, YYYY-MM-DD (default: today, UTC)",
    )
    args = parser.parse_args(argv)
    s = generate(args.out, args.patients, seed=args.seed, as_of=args.as_of)
    for path, count in s.files.items():
        print(f"{path:32} {count.records:>10} records {count.bad:>6} bad")
    rate = s.patients / s.seconds if s.seconds else 0.0
    print(
        f"{s.patients} patients, {s.crm_contacts} CRM contacts ({s.crm_leads} leads), "
        f"{s.hl7_patients} in HL7, {s.total_bad} bad records; "
        f"{s.seconds:.1f} s ({rate:,.0f} patients/s) -> {s.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate a synthetic data set (FHIR NDJSON, HL7 v2, CRM CSV, manifest.json), streaming.

People are made and written one at a time to all output files at once, so memory does not
grow with `patients`. The output is byte-for-byte deterministic for (patients, seed, as_of).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from random import Random
from typing import Any

import orjson

from synthetic import codes as C
from synthetic import fhir
from synthetic.bad import KINDS, BadRecords
from synthetic.clock import Clock
from synthetic.crm import CrmRenderer
from synthetic.hl7 import FILES as HL7_FILES
from synthetic.hl7 import Hl7Renderer
from synthetic.people import Person, PersonFactory
from synthetic.sinks import CRM_PATH, Sinks, fhir_path, hl7_path

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1024  # people per flush: large enough to amortise writes, small enough for memory
_LEAD_SHARE = 0.1  # CRM-only leads per patient


@dataclass(frozen=True, slots=True)
class FileCount:
    """Records written to one file (lines, messages or data rows), of which `bad` on purpose."""

    records: int
    bad: int = 0


@dataclass(slots=True)
class GenerationSummary:
    """What `generate` wrote: counts per file (path relative to out_dir) and per bad kind."""

    out_dir: Path
    patients: int
    seed: int
    as_of: date
    files: dict[str, FileCount] = field(default_factory=dict)
    bad: dict[str, int] = field(default_factory=dict)
    crm_contacts: int = 0  # data rows in contacts.csv that are good (patients + leads)
    crm_leads: int = 0
    hl7_patients: int = 0
    seconds: float = 0.0

    @property
    def total_records(self) -> int:
        return sum(f.records for f in self.files.values())

    @property
    def total_bad(self) -> int:
        return sum(self.bad.values())


def generate(
    out_dir: Path, patients: int, seed: int = 7, as_of: date | None = None
) -> GenerationSummary:
    """Write the synthetic data set for `patients` people under out_dir and return its summary.

    `as_of` (default: today in UTC) anchors every clinical date, so care-gap segments are
    populated whenever the data is generated.
    """
    if patients < 1:
        raise ValueError("patients must be at least 1")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    as_of = as_of or datetime.now(UTC).date()
    clock = Clock(as_of)

    # One stream for the people, another for the bad records, so that planting bad records
    # never shifts the good data.
    rng = Random(seed)
    factory = PersonFactory(rng, clock.flu_season_days)
    hl7 = Hl7Renderer(rng, clock)
    crm = CrmRenderer(rng, clock)
    bad = BadRecords(Random(f"audience-hub/bad/{seed}"), clock)
    plan = bad.plan(patients)
    hl7_patients = 0

    with Sinks(out_dir) as sinks:
        # In concatenated HL7 a headerless message is only recognisable before the first MSH,
        # so each HL7 file opens with one.
        for kind in HL7_FILES:
            sinks.hl7[kind].append(bad.hl7_missing_msh(kind))
            sinks.bad[hl7_path(kind)] += 1
            bad.counts["hl7_missing_msh"] += 1

        fhir_out, hl7_out, crm_out = sinks.fhir, sinks.hl7, sinks.crm
        render_fhir, render_hl7 = fhir.render, hl7.render
        patient_row, lead_row, rnd = crm.patient_row, crm.lead_row, rng.random
        for i in range(patients):
            p = factory.make(i)
            render_fhir(p, clock, fhir_out)
            if p.in_hl7:
                render_hl7(p, hl7_out)
                hl7_patients += 1
            row = patient_row(p)
            if row is not None:
                crm_out.append(row)
            if rnd() < _LEAD_SHARE:
                crm_out.append(lead_row())
            kinds = plan.get(i)
            if kinds:
                for kind in kinds:
                    _write_bad(kind, p, bad, hl7, sinks)
            if i % _CHUNK == _CHUNK - 1:
                sinks.flush()

    summary = GenerationSummary(
        out_dir=out_dir,
        patients=patients,
        seed=seed,
        as_of=as_of,
        files={path: FileCount(n, sinks.bad[path]) for path, n in sinks.records.items()},
        bad=dict(bad.counts),
        crm_contacts=crm.contacts,
        crm_leads=crm.leads,
        hl7_patients=hl7_patients,
    )
    (out_dir / MANIFEST).write_bytes(
        orjson.dumps(_manifest(summary, sinks.sizes), option=orjson.OPT_INDENT_2) + b"\n"
    )
    summary.seconds = time.perf_counter() - started
    return summary


def _write_bad(kind: str, p: Person, bad: BadRecords, hl7: Hl7Renderer, sinks: Sinks) -> None:
    """Append one bad record of `kind` (planted after person p) to its file."""
    if kind.startswith("fhir_"):
        rtype, line = getattr(bad, kind)(p)
        sinks.fhir[rtype].append(line)
        sinks.bad[fhir_path(rtype)] += 1
    elif kind == "hl7_missing_pid":
        sinks.hl7["adt"].append(bad.hl7_missing_pid(hl7.ids.next("adt")))
        sinks.bad[hl7_path("adt")] += 1
    else:
        sinks.crm.append(bad.crm_row(kind))
        sinks.bad[CRM_PATH] += 1
    bad.counts[kind] += 1


def _manifest(summary: GenerationSummary, sizes: dict[str, int]) -> dict[str, Any]:
    """manifest.json: deterministic (no wall-clock times), files in a stable order."""
    files: dict[str, Any] = {}
    for path, count in summary.files.items():
        entry: dict[str, Any] = {}
        if path.startswith("fhir/"):
            entry["format"] = "fhir-r4-ndjson"
            entry["resource_type"] = path.split("/")[1].split(".")[0]
        elif path.startswith("hl7/"):
            entry["format"] = "hl7v2.5.1"
        else:
            entry["format"] = "csv"
        entry.update(records=count.records, bad=count.bad, bytes=sizes[path])
        files[path] = entry
    return {
        "generator": "audience-hub synthetic",
        "format_version": FORMAT_VERSION,
        "patients": summary.patients,
        "seed": summary.seed,
        "as_of": summary.as_of.isoformat(),
        "conventions": {
            "mrn_authority": C.MRN_AUTHORITY,
            "mrn_system": C.MRN_SYSTEM,
            "ssn_system": C.SSN_SYSTEM,
            "records": "FHIR: NDJSON lines; HL7: messages (CR-separated segments, concatenated);"
            " CSV: data rows after the header (CRLF, RFC 4180)",
        },
        "files": files,
        "bad_records": {
            k.name: {
                "count": summary.bad[k.name],
                "file": k.file,
                "reason": k.reason,
                "description": k.description,
            }
            for k in KINDS
        },
        "totals": {
            "records": summary.total_records,
            "bad": summary.total_bad,
            "crm_contacts": summary.crm_contacts,
            "crm_leads": summary.crm_leads,
            "hl7_patients": summary.hl7_patients,
        },
    }

"""`hub policy check`: which source fields the field policy does not cover (default deny).

Runs the connectors over the given files without loading anything and counts, per
entity.field, how many records carried a field the policy does not name - and would
therefore drop. Field names and counts only: no values are read into the report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from domain.policy import FieldPolicy
from domain.records import Rejection, SourceRecord
from services.ingest import detect_source, read_units


@dataclass
class PolicyCheckReport:
    files: int = 0
    records: int = 0
    rejected: int = 0
    uncovered: Counter = field(default_factory=Counter)  # "entity.field" -> records
    unknown_entities: Counter = field(default_factory=Counter)

    @property
    def covered(self) -> bool:
        return not self.uncovered and not self.unknown_entities

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "records": self.records,
            "rejected": self.rejected,
            "uncovered_fields": dict(sorted(self.uncovered.items())),
            "unknown_entities": dict(sorted(self.unknown_entities.items())),
        }


def check_policy(
    uris: Iterable[str],
    policy: FieldPolicy,
    source: str | None = None,
    fhir_mode: str = "fast",
) -> PolicyCheckReport:
    report = PolicyCheckReport()
    for uri in uris:
        report.files += 1
        for unit in read_units(uri, source or detect_source(uri), fhir_mode):
            if isinstance(unit, Rejection):
                report.rejected += 1
                continue
            for record in unit if isinstance(unit, list) else (unit,):
                report.records += 1
                _count(record, policy, report)
    return report


def _count(record: SourceRecord, policy: FieldPolicy, report: PolicyCheckReport) -> None:
    entity = policy.entities.get(record.entity)
    if entity is None:
        report.unknown_entities[record.entity] += 1
        return
    for name in record.fields:
        if name not in entity.fields:
            report.uncovered[f"{record.entity}.{name}"] += 1

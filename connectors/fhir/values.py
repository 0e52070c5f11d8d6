"""Fast helpers the FHIR extractors share: field errors, dates, references and codings.

Everything here works on plain `dict`/`list`/`str` from orjson, with no pydantic, because it
runs once or more per resource on the hot path. Errors carry a reason code and the FHIR field
path only; no helper ever puts a value from the record into an error.

Dates (FHIR `date`, `dateTime`, `instant`):
- `YYYY`, `YYYY-MM`, `YYYY-MM-DD` are accepted; a partial date becomes the first day of its
  year or month (the contract has no precision column, and "born 1970" is still useful).
- A `dateTime` with a time is parsed with `datetime.fromisoformat` after a cheap shape check
  (FHIR needs `YYYY-MM-DDThh:mm:ss`); a time with no offset is taken as UTC (FHIR requires an
  offset, real exports sometimes omit it; strict mode still flags it).
- A `dateTime` read into a `date` column keeps the local calendar date as written (an onset
  at 23:30-05:00 is still that day clinically); `datetime` columns are converted to UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

# Bundle-local reference map: fullUrl -> (resourceType, logical id).
RefMap = dict[str, tuple[str, str]]


class FieldError(Exception):
    """A resource fails a check: a reason code, the FHIR field path and a value-free detail."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(reason, field, detail)
        self.reason = reason
        self.field = field
        self.detail = detail


def parse_date(value: Any, field: str) -> date | None:
    """A FHIR date or dateTime as a calendar date (partial dates -> first day); None if absent."""
    if value is None:
        return None
    if type(value) is not str or not value.isascii():
        raise FieldError("BAD_DATE", field, "is not a FHIR date")
    n = len(value)
    try:
        if n == 10 and value[4] == "-" and value[7] == "-":
            return date.fromisoformat(value)
        if n > 10:
            return _parse_time(value, field).date()
        if n == 4 and value.isdigit():
            return date(int(value), 1, 1)
        if n == 7 and value[4] == "-" and value[:4].isdigit() and value[5:].isdigit():
            return date(int(value[:4]), int(value[5:]), 1)
    except ValueError:
        pass
    raise FieldError("BAD_DATE", field, "is not a FHIR date")


def parse_datetime(value: Any, field: str) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware UTC datetime; None if absent."""
    if value is None:
        return None
    if type(value) is str and len(value) > 10 and value.isascii():
        dt = _parse_time(value, field)
        if dt.tzinfo is None:
            return dt.replace(tzinfo=UTC)
        return dt.astimezone(UTC)
    day = parse_date(value, field)
    assert day is not None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _parse_time(value: str, field: str) -> datetime:
    # The shape check keeps out forms fromisoformat accepts but FHIR does not (20200101,
    # week dates, a space separator, hours without minutes).
    if (
        len(value) < 19
        or value[10] != "T"
        or value[4] != "-"
        or value[7] != "-"
        or value[13] != ":"
        or value[16] != ":"
    ):
        raise FieldError("BAD_DATE", field, "is not a FHIR dateTime")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise FieldError("BAD_DATE", field, "is not a FHIR dateTime") from None


def obj(value: Any, field: str) -> dict[str, Any] | None:
    """`value` if it is a JSON object, None if absent; another JSON type is a FHIR_INVALID."""
    if value is None or type(value) is dict:
        return value
    raise FieldError("FHIR_INVALID", field, "is not a JSON object")


def arr(value: Any, field: str) -> list[Any]:
    """`value` if it is a JSON array, [] if absent; another JSON type is a FHIR_INVALID."""
    if value is None:
        return []
    if type(value) is list:
        return value
    raise FieldError("FHIR_INVALID", field, "is not a JSON array")


def text(value: Any, field: str) -> str | None:
    """`value` if it is a non-empty string, None if absent or empty; else FHIR_INVALID."""
    if value is None or value == "":
        return None
    if type(value) is str:
        return value
    raise FieldError("FHIR_INVALID", field, "is not a string")


def patient_ref(ref: Any, field: str, refs: RefMap | None) -> str:
    """The Patient id a Reference points to (`Patient/<id>`, absolute URL or bundle urn:uuid)."""
    if ref is None:
        raise FieldError("FHIR_BAD_REFERENCE", field, "is missing")
    if type(ref) is not dict:
        raise FieldError("FHIR_BAD_REFERENCE", field, "is not a Reference")
    target = ref.get("reference")
    if type(target) is not str or not target:
        raise FieldError("FHIR_BAD_REFERENCE", field + ".reference", "is missing")
    if target.startswith("Patient/"):
        pid = target[8:].split("/", 1)[0]  # drops a trailing /_history/<version>
        if pid:
            return pid
    elif refs is not None and target in refs:
        # Bundle-local: urn:uuid:... or an absolute fullUrl.
        rtype, rid = refs[target]
        if rtype == "Patient" and rid:
            return rid
    elif target.startswith("urn:"):
        raise FieldError(
            "FHIR_BAD_REFERENCE", field + ".reference", "does not resolve in the Bundle"
        )
    elif "://" in target:
        parts = target.split("?", 1)[0].split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
            return parts[-1]
    raise FieldError("FHIR_BAD_REFERENCE", field + ".reference", "does not point to a Patient")


# Canonical short names for the code systems the hub reports on; others keep their URI.
CODE_SYSTEMS = {
    "http://snomed.info/sct": "snomed",
    "http://hl7.org/fhir/sid/icd-10-cm": "icd10",
    "http://hl7.org/fhir/sid/icd-10": "icd10",
    "http://loinc.org": "loinc",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "rxnorm",
    "http://hl7.org/fhir/sid/cvx": "cvx",
    "http://www.ama-assn.org/go/cpt": "cpt",
    "http://hl7.org/fhir/sid/ndc": "ndc",
}


def first_coding(concept: Any, field: str) -> dict[str, Any] | None:
    """The first coding of a CodeableConcept that has a code, or None."""
    cc = obj(concept, field)
    if cc is None:
        return None
    for coding in arr(cc.get("coding"), field + ".coding"):
        if type(coding) is dict and coding.get("code"):
            return coding
    return None


def code_fields(concept: Any, field: str) -> dict[str, Any]:
    """code_system/code/display from a required CodeableConcept; MISSING_FIELD if no code."""
    coding = first_coding(concept, field)
    if coding is None:
        raise FieldError("MISSING_FIELD", field + ".coding.code", "is missing")
    code = text(coding.get("code"), field + ".coding.code")
    system = text(coding.get("system"), field + ".coding.system")
    return {
        "code_system": CODE_SYSTEMS.get(system, system) if system else None,
        "code": code,
        "display": text(coding.get("display"), field + ".coding.display"),
    }


def base_fields(resource: dict[str, Any], rid: str | None) -> dict[str, Any]:
    """The columns every FHIR record has: subject_system, source_id and effective_at."""
    if not rid or type(rid) is not str:
        raise FieldError("MISSING_FIELD", "id", "is missing")
    meta = resource.get("meta")
    updated = None
    if meta is not None:
        updated = parse_datetime(obj(meta, "meta").get("lastUpdated"), "meta.lastUpdated")
    return {"subject_system": "fhir", "source_id": rid, "effective_at": updated}


def period_start_end(period: Any, field: str) -> tuple[datetime | None, datetime | None]:
    """(start, end) of a FHIR Period as UTC datetimes."""
    p = obj(period, field)
    if p is None:
        return None, None
    return (
        parse_datetime(p.get("start"), field + ".start"),
        parse_datetime(p.get("end"), field + ".end"),
    )

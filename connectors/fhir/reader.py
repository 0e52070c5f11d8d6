"""Read FHIR R4 NDJSON, single-resource JSON and Bundles into SourceRecords and Rejections.

Format detection looks at content, not the file name:
- the first non-blank line parses as JSON on its own -> NDJSON, one resource per line
  ("line N"; blank lines are not records and are skipped), except that a Bundle alone on its
  line is a Bundle file; a Bundle among other lines gives "line N entry M";
- otherwise the whole file is one JSON document -> a single resource ("file") or a Bundle
  whose entries are the records ("entry N");
- if neither parses: NDJSON when at least one line holds a JSON object (each bad line is then
  NOT_JSON), else one NOT_JSON (or BAD_ENCODING) rejection for the file.

Every record yields exactly one SourceRecord or one Rejection, in file order, so that
read = loaded + quarantined. Messages name the position and field, never a value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import IO, Any, Literal

import orjson

from connectors.fhir import clinical
from connectors.fhir.consent import check_r4_shape, consent
from connectors.fhir.patient import patient
from connectors.fhir.strict import StrictValidator
from connectors.fhir.types import ENTITY_OF, safe_type_name
from connectors.fhir.values import FieldError, RefMap
from connectors.fhir.versions import check_version
from connectors.sources import open_binary
from domain.records import Rejection, SourceRecord

Item = SourceRecord | Rejection
Extractor = Callable[[dict[str, Any], str | None, RefMap | None], dict[str, Any]]

_EXTRACTORS: dict[str, tuple[str, Extractor]] = {
    "Patient": (ENTITY_OF["Patient"], patient),
    "Condition": (ENTITY_OF["Condition"], clinical.condition),
    "Encounter": (ENTITY_OF["Encounter"], clinical.encounter),
    "Observation": (ENTITY_OF["Observation"], clinical.observation),
    "MedicationRequest": (ENTITY_OF["MedicationRequest"], clinical.medication_request),
    "Immunization": (ENTITY_OF["Immunization"], clinical.immunization),
    "Procedure": (ENTITY_OF["Procedure"], clinical.procedure),
    "Appointment": (ENTITY_OF["Appointment"], clinical.appointment),
    "Consent": (ENTITY_OF["Consent"], consent),
}
# Version-shape checks that must run before strict validation, so that an STU3 resource is
# reported as FHIR_WRONG_VERSION rather than as a pile of R4 validation errors.
_PRECHECKS: dict[str, Callable[[dict[str, Any]], None]] = {"Consent": check_r4_shape}

# One NDJSON line larger than this is rejected unparsed (a runaway line is not a resource).
MAX_LINE_BYTES = 32 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"

# The shape errors an extractor did not anticipate (a string where an object belongs...).
_STRUCTURE_ERRORS = (TypeError, AttributeError, ValueError, KeyError, IndexError)


def read_fhir(uri: str, mode: Literal["fast", "strict"] = "fast") -> Iterator[Item]:
    """Records and rejections from the FHIR file at `uri` (any smart_open URI, .gz/.zst too).

    `fast` checks what the hub uses (references, dates, codes, R4 shape); `strict` also
    validates every resource that passes those checks against the fhir.resources R4B model
    (about 20x slower: pydantic validation of the full resource).
    """
    if mode not in ("fast", "strict"):
        raise ValueError("mode must be 'fast' or 'strict'")
    validator = StrictValidator() if mode == "strict" else None
    with open_binary(uri) as stream:
        yield from read_fhir_stream(stream, validator)


def read_fhir_stream(stream: IO[bytes], validator: StrictValidator | None = None) -> Iterator[Item]:
    """Like `read_fhir`, from an open binary stream."""
    first = stream.readline()
    if first.startswith(_BOM):
        first = first[len(_BOM) :]
    n = 1
    while first and first.isspace():
        first = stream.readline()
        n += 1
    if not first:
        return
    head = _loads_or_none(first)
    if head is not None:
        if type(head) is dict and head.get("resourceType") == "Bundle":
            # A Bundle alone on its line is a Bundle file ("entry N"); a Bundle followed by
            # more lines is NDJSON ("line N entry M").
            held = []
            nxt = stream.readline()
            while nxt and nxt.isspace():
                held.append(nxt)
                nxt = stream.readline()
            if not nxt:
                yield from _bundle(head, None, first.strip(), validator)
            else:
                yield from _ndjson(chain([first], held, [nxt], stream), n, validator)
        else:
            yield from _ndjson(chain([first], stream), n, validator)
        return
    whole = first + stream.read()
    if _parses(whole):
        yield from _document(whole, validator)
    elif any(_is_object_line(line) for line in whole.splitlines()):
        yield from _ndjson(whole.splitlines(keepends=True), n, validator)
    else:
        yield _undecodable("file", whole)


def _loads_or_none(data: bytes) -> Any:
    """The parsed JSON value, or None if `data` is not JSON (JSON null counts as not JSON)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _parses(data: bytes) -> bool:
    return _loads_or_none(data) is not None


def _is_object_line(line: bytes) -> bool:
    stripped = line.strip()
    return stripped[:1] == b"{" and _parses(stripped)


def _undecodable(pos: str, data: bytes) -> Rejection:
    """NOT_JSON, or BAD_ENCODING when the bytes are not UTF-8 (what orjson requires)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection(pos, "BAD_ENCODING", f"{pos}: not valid UTF-8", data)
    return Rejection(pos, "NOT_JSON", f"{pos}: not valid JSON", data)


def _ndjson(
    lines: Iterable[bytes], start: int, validator: StrictValidator | None
) -> Iterator[Item]:
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    for n, line in enumerate(lines, start):
        if not line or line.isspace():
            continue
        pos = f"line {n}"
        if len(line) > MAX_LINE_BYTES:
            # No payload: quarantining tens of MB of unparsed bytes would not help anyone.
            yield Rejection(pos, "RECORD_TOO_LARGE", f"{pos}: line exceeds {MAX_LINE_BYTES} bytes")
            continue
        try:
            resource = loads(line)
        except decode_error:
            yield _undecodable(pos, line.rstrip(b"\r\n"))
            continue
        if type(resource) is dict and resource.get("resourceType") == "Bundle":
            yield from _bundle(resource, pos, line.rstrip(b"\r\n"), validator)
        else:
            yield _one(resource, pos, line.rstrip(b"\r\n"), None, None, validator)


def _document(data: bytes, validator: StrictValidator | None) -> Iterator[Item]:
    resource = orjson.loads(data)
    if type(resource) is dict and resource.get("resourceType") == "Bundle":
        yield from _bundle(resource, None, data, validator)
    else:
        yield _one(resource, "file", data.strip(), None, None, validator)


def _bundle(
    bundle: dict[str, Any], line_pos: str | None, payload: bytes, validator: StrictValidator | None
) -> Iterator[Item]:
    """One item per entry; urn:uuid (and absolute fullUrl) references resolve within the Bundle."""
    where = line_pos or "file"
    entries = bundle.get("entry")
    if type(entries) is not list or not entries:
        reason = (
            "FHIR_INVALID" if entries is not None and type(entries) is not list else "MISSING_FIELD"
        )
        yield Rejection(
            where, reason, f"{where}: Bundle.entry is missing, empty or not an array", payload
        )
        return
    prefix = f"{line_pos} " if line_pos else ""
    try:
        check_version(bundle)
        wrong_version = None
    except FieldError as exc:
        wrong_version = exc

    refs: RefMap = {}
    for entry in entries:
        if type(entry) is dict and type(entry.get("resource")) is dict:
            full_url = entry.get("fullUrl")
            rtype, rid = _type_and_id(entry)
            if type(full_url) is str and rtype and rid:
                refs[full_url] = (rtype, rid)

    for m, entry in enumerate(entries, 1):
        pos = f"{prefix}entry {m}"
        resource = entry.get("resource") if type(entry) is dict else None
        if type(resource) is not dict:
            raw = orjson.dumps(entry)
            yield Rejection(pos, "MISSING_FIELD", f"{pos}: Bundle.entry.resource is missing", raw)
        elif wrong_version is not None:
            msg = f"{pos}: Bundle.{wrong_version.field} {wrong_version.detail}"
            yield Rejection(pos, wrong_version.reason, msg, orjson.dumps(resource))
        elif resource.get("resourceType") == "Bundle":
            msg = f"{pos}: a nested Bundle is not ingested"
            yield Rejection(pos, "FHIR_UNSUPPORTED_TYPE", msg, orjson.dumps(resource))
        else:
            rid = _type_and_id(entry)[1]
            yield _one(resource, pos, None, rid, refs, validator)


def _type_and_id(entry: dict[str, Any]) -> tuple[str | None, str | None]:
    """resourceType and logical id of an entry; an id-less resource takes its urn:uuid."""
    resource = entry["resource"]
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    if not rid:
        full_url = entry.get("fullUrl")
        if type(full_url) is str and full_url.startswith("urn:uuid:"):
            rid = full_url[9:]
    return (
        rtype if type(rtype) is str else None,
        rid if type(rid) is str and rid else None,
    )


def _one(
    resource: Any,
    pos: str,
    payload: bytes | None,
    rid: str | None,
    refs: RefMap | None,
    validator: StrictValidator | None,
) -> Item:
    """Check and extract one resource."""
    if type(resource) is not dict:
        return Rejection(
            pos, "FHIR_NOT_A_RESOURCE", f"{pos}: not a JSON object", _raw(payload, resource)
        )
    rtype = resource.get("resourceType")
    if type(rtype) is not str or not rtype:
        msg = f"{pos}: resourceType is missing"
        return Rejection(pos, "FHIR_NOT_A_RESOURCE", msg, _raw(payload, resource))
    found = _EXTRACTORS.get(rtype)
    if found is None:
        msg = f"{pos}: resourceType {safe_type_name(rtype)} is not ingested"
        return Rejection(pos, "FHIR_UNSUPPORTED_TYPE", msg, _raw(payload, resource))
    entity, extract = found
    try:
        check_version(resource)
        precheck = _PRECHECKS.get(rtype)
        if precheck is not None:
            precheck(resource)
        fields = extract(resource, rid if rid is not None else resource.get("id"), refs)
        if validator is not None:
            # After the fast checks, so a bad date or reference earns the same specific reason
            # code in both modes; strict adds FHIR_INVALID for everything else.
            validator.check(rtype, resource)
    except FieldError as exc:
        msg = f"{pos}: {rtype}.{exc.field} {exc.detail}"
        return Rejection(pos, exc.reason, msg, _raw(payload, resource), entity)
    except _STRUCTURE_ERRORS:
        msg = f"{pos}: {_structure_problem(rtype, resource, validator)}"
        return Rejection(pos, "FHIR_INVALID", msg, _raw(payload, resource), entity)
    return SourceRecord(entity, pos, fields)


_EXPLAINER: list[StrictValidator] = []


def _structure_problem(
    rtype: str, resource: dict[str, Any], validator: StrictValidator | None
) -> str:
    """Name the element an extractor choked on, by asking the R4B model (rare path only)."""
    if validator is None:
        if not _EXPLAINER:
            _EXPLAINER.append(StrictValidator())
        validator = _EXPLAINER[0]
    try:
        validator.check(rtype, resource)
    except FieldError as exc:
        return f"{rtype}.{exc.field} {exc.detail}"
    return f"{rtype} has an element of an unexpected JSON type"


def _raw(payload: bytes | None, resource: Any) -> bytes:
    # Bundle entries have no line of their own: their payload is the entry re-serialised.
    return payload if payload is not None else orjson.dumps(resource)

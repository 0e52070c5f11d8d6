"""Property-based fuzzing of the FHIR, HL7 and CRM readers with near-valid structured inputs.

The per-connector suites fuzz each reader's own edges; these generators start from valid
records carrying canary PHI and mutate them the way real feeds go wrong (a field of the wrong
type, a date that is not one, declared delimiters that are unusual but legal, escapes, mixed
line endings, formula cells). Properties, for every input: no exception escapes, every
record comes out as exactly one record or one rejection with a catalogued reason, and no
canary appears in a rejection message. Parse level only: no database, so it runs fast.
"""

from __future__ import annotations

import copy
import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.crm import builtin_mapping, read_crm
from connectors.fhir import read_fhir_stream
from connectors.hl7 import read_hl7_chunks
from domain.reasons import REASONS
from domain.records import Rejection, SourceRecord
from tests.reliability.corpus.build import (
    CANARIES,
    CANARY_BIRTH,
    CANARY_EMAIL,
    CANARY_FAMILY,
    CANARY_GIVEN,
    CANARY_MRN,
    CANARY_PHONE,
    CANARY_SSN,
    CRM_HEADER,
    INJECTIONS,
    crm_row,
    patient,
)
from tests.reliability.figures import FIGURES

DEFAULT_EXAMPLES = 120
SOAK_EXAMPLES = 2500

HOSTILE_SCALARS = st.sampled_from(
    [
        CANARY_FAMILY,
        CANARY_EMAIL,
        CANARY_SSN,
        CANARY_BIRTH,
        f"Patient/{CANARY_MRN}",
        f"urn:uuid:{CANARY_MRN}",
        f"{CANARY_BIRTH}T25:61:00Z",
        "1933-02-30",
        "",
        " ",
        "\u0000" + CANARY_GIVEN,
        "\ufeff" + CANARY_GIVEN,
        CANARY_FAMILY * 500,
        *INJECTIONS,
        None,
        True,
        0,
        -1,
        2**63,
        1e308,
        [],
        {},
        [CANARY_FAMILY],
        {"reference": CANARY_FAMILY},
        {"value": CANARY_PHONE},
    ]
)
JSON_VALUES = st.recursive(
    HOSTILE_SCALARS
    | st.text(max_size=12)
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, min_size=1, max_size=3)
    ),
    max_leaves=6,
)


def _fresh(value: Any) -> Any:
    # sampled_from hands out the same list/dict objects again: mutate copies, never them.
    return copy.deepcopy(value)


def _check_rejection(item: Rejection) -> None:
    assert item.reason in REASONS
    leaked = [c for c in CANARIES if c in item.message or c in item.position]
    assert not leaked, item.message


def _settle(items: list[Any]) -> tuple[int, int]:
    """(records, rejections); every rejection checked for a catalogued reason and no PHI."""
    records = rejections = 0
    for item in items:
        if isinstance(item, Rejection):
            _check_rejection(item)
            rejections += 1
        else:
            assert isinstance(item, SourceRecord)
            assert not [c for c in CANARIES if c in item.position]
            records += 1
    return records, rejections


def _twice(body: Callable[..., None], strategy_kwargs: dict[str, Any]):
    """The same property as a default test and a soak test (more examples)."""

    def make(examples: int):
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(**strategy_kwargs)
        def test(**kwargs: Any) -> None:
            FIGURES.add("fuzz_inputs")
            body(**kwargs)

        return test

    return make(DEFAULT_EXAMPLES), pytest.mark.soak(make(SOAK_EXAMPLES))


# --- FHIR ------------------------------------------------------------------------------------

_REF = {"reference": "Patient/canary-1"}
FHIR_TEMPLATES: list[dict[str, Any]] = [
    patient("canary-1"),
    {
        "resourceType": "Consent",
        "id": "c1",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": _REF,
        "dateTime": "2025-01-01T10:00:00Z",
        "provision": {
            "type": "permit",
            "period": {"start": "2025-01-01", "end": "2026-01-01"},
            "purpose": [{"code": "HMARKT"}],
        },
    },
    {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": _REF,
        "effectiveDateTime": "2025-01-01T10:00:00Z",
        "valueQuantity": {"value": 7.1, "unit": "%"},
    },
    {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": _REF,
        "period": {"start": "2025-01-01T10:00:00Z", "end": "2025-01-01T11:00:00Z"},
    },
    {
        "resourceType": "Immunization",
        "id": "i1",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
        "patient": _REF,
        "occurrenceDateTime": "2024-10-01",
    },
]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _mutate(resource: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    resource = orjson.loads(orjson.dumps(resource))  # a deep copy
    for _ in range(data.draw(st.integers(0, 3))):
        paths = _paths(resource)
        path = data.draw(st.sampled_from(paths))
        parent = resource
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["replace", "delete", "wrap", "deepen"]))
        key = path[-1]
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "wrap":
            parent[key] = data.draw(st.sampled_from([[parent[key]], {"value": parent[key]}]))
        elif action == "deepen":
            nested: Any = CANARY_FAMILY
            for _ in range(data.draw(st.integers(1, 60))):
                nested = {"a": nested}
            parent[key] = nested
        else:
            parent[key] = _fresh(data.draw(JSON_VALUES))
    return resource


def _fhir_ndjson(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 6))
    resources = [_mutate(data.draw(st.sampled_from(FHIR_TEMPLATES)), data) for _ in range(count)]
    lines = []
    for resource in resources:
        ending = data.draw(st.sampled_from([b"\n", b"\r\n"]))
        lines.append(orjson.dumps(resource) + ending)
        if data.draw(st.booleans()):
            lines.append(data.draw(st.sampled_from([b"\n", b"  \n", b"\t\r\n"])))
    blob = b"".join(lines)
    if data.draw(st.booleans()):
        blob = b"\xef\xbb\xbf" + blob
    items = list(read_fhir_stream(io.BytesIO(blob)))
    assert sum(_settle(items)) == count  # one item per resource line, in order
    assert [i.position for i in items] == sorted(
        (i.position for i in items), key=lambda p: int(p.split()[1])
    )


def _fhir_bundle(data: st.DataObject) -> None:
    entries = []
    for n in range(data.draw(st.integers(1, 5))):
        resource = _mutate(data.draw(st.sampled_from(FHIR_TEMPLATES)), data)
        entry: Any = {"fullUrl": f"urn:uuid:entry-{n}", "resource": resource}
        if data.draw(st.integers(0, 9)) == 0:
            entry = _fresh(data.draw(JSON_VALUES))  # an entry that is not an entry at all
        entries.append(entry)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    items = list(read_fhir_stream(io.BytesIO(orjson.dumps(bundle))))
    assert sum(_settle(items)) == len(entries)


test_fhir_ndjson_lines_each_end_as_one_item, test_fhir_ndjson_lines_soak = _twice(
    _fhir_ndjson, {"data": st.data()}
)
test_fhir_bundle_entries_each_end_as_one_item, test_fhir_bundle_entries_soak = _twice(
    _fhir_bundle, {"data": st.data()}
)


# --- HL7 v2 ----------------------------------------------------------------------------------

PUNCTUATION = "|^~\\&#$*@%!?+=:;/<>'\"`{}[]_,"


def _escape(value: str, d: str) -> str:
    field, comp, rep, esc, sub = d
    out = []
    for char in value:
        code = {field: "F", comp: "S", rep: "R", esc: "E", sub: "T"}.get(char)
        out.append(f"{esc}{code}{esc}" if code else char)
    return "".join(out)


def _hl7_message(d: str, control: str, family: str, terminator: str) -> str:
    field, comp, rep = d[:3]

    def f(*components: str) -> str:
        return comp.join(_escape(c, d) for c in components)

    msh = f"MSH{field}{d[1:]}{field}" + field.join(
        [
            "HUBEHR",
            "HUBHOSP",
            "AUDIENCEHUB",
            "HUBHOSP",
            "20250204143900",
            "",
            f("ADT", "A04", "ADT_A01"),
            control,
            "P",
            "2.5.1",
        ]
    )
    pid = field.join(
        [
            "PID",
            "1",
            "",
            f(CANARY_MRN, "", "", "HUBHOSP", "MR"),
            "",
            f(family, CANARY_GIVEN) + rep + f("Alias", "Al"),
            "",
            CANARY_BIRTH.replace("-", ""),
            "F",
            "",
            "",
            f("77 Canaryvale Rd", "", "Springfield", "MA", "02134"),
            "",
            f("", "NET", "Internet", CANARY_EMAIL),
        ]
    )
    segments = [msh, f"EVN{field}A04{field}20250204143900", pid, f"PV1{field}1{field}O"]
    return terminator.join(segments) + terminator


@st.composite
def delimiter_sets(draw: st.DrawFn) -> str:
    return "".join(draw(st.permutations(PUNCTUATION))[:5])


def _hl7_roundtrip(data: st.DataObject) -> None:
    """Legal but unusual delimiters, escapes of every delimiter in a name, random framing."""
    messages = []
    expected_families = []
    for n in range(data.draw(st.integers(1, 4))):
        d = data.draw(delimiter_sets())
        family = CANARY_FAMILY + data.draw(st.text(alphabet=d + "xY ", max_size=6))
        terminator = data.draw(st.sampled_from(["\r", "\n", "\r\n"]))
        messages.append(_hl7_message(d, f"MSG{n:04d}", family, terminator))
        expected_families.append(family.strip() or None)
    blob = "".join(messages).encode()
    if data.draw(st.booleans()):
        blob = b"".join(b"\x0b" + m.encode() + b"\x1c\r" for m in messages)  # MLLP framing
    chunk = data.draw(st.integers(1, 200))
    got = list(read_hl7_chunks(blob[i : i + chunk] for i in range(0, len(blob), chunk)))
    assert len(got) == len(messages)
    for message, family in zip(got, expected_families, strict=True):
        assert message.rejection is None, message.rejection
        [person] = [r for r in message.records if r.entity == "patient"]
        assert person.fields["family_name"] == family
        assert person.fields["given_name"] == CANARY_GIVEN


def _hl7_corrupted(data: st.DataObject) -> None:
    """The same messages, damaged: truncated, spliced, re-delimited, garbage inserted."""
    d = data.draw(delimiter_sets())
    text = "".join(_hl7_message(d, f"MSG{n:04d}", CANARY_FAMILY, "\r") for n in range(3))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        damage = data.draw(
            st.sampled_from(["cut", "insert", "swap_delimiter", "drop_segment", "dup_msh"])
        )
        if damage == "cut":
            text = text[:at]
        elif damage == "insert":
            text = (
                text[:at]
                + data.draw(st.text(alphabet=PUNCTUATION + "\r\nMSH\x0b\x1c", max_size=12))
                + text[at:]
            )
        elif damage == "swap_delimiter" and len(text) > 8:
            other = data.draw(st.sampled_from(PUNCTUATION))
            text = text.replace(text[data.draw(st.integers(3, 8))], other)
        elif damage == "drop_segment":
            segments = text.split("\r")
            segments.pop(data.draw(st.integers(0, len(segments) - 1)))
            text = "\r".join(segments)
        else:
            text = text[:at] + "MSH" + text[at:]
    blob = text.encode() + data.draw(st.binary(max_size=16))
    chunk = data.draw(st.integers(1, 200))
    got = list(read_hl7_chunks(blob[i : i + chunk] for i in range(0, len(blob), chunk)))
    for message in got:
        assert (message.rejection is None) == bool(message.records)
        if message.rejection is not None:
            _check_rejection(message.rejection)
    assert [m.index for m in got] == list(range(1, len(got) + 1))


test_hl7_unusual_delimiters_round_trip, test_hl7_unusual_delimiters_soak = _twice(
    _hl7_roundtrip, {"data": st.data()}
)
test_hl7_damaged_streams_stay_accounted, test_hl7_damaged_streams_soak = _twice(
    _hl7_corrupted, {"data": st.data()}
)


# --- CRM -------------------------------------------------------------------------------------

CELL_VALUES = (
    HOSTILE_SCALARS.filter(lambda v: isinstance(v, str))
    | st.text(max_size=20)
    | st.sampled_from(['"', '""', ",", "\r\n", "\n", " , ", "\ufeff", "é", "N" * 5000])
)
CONTACTS = builtin_mapping("contacts")


@contextmanager
def _scratch_file(suffix: str, data: bytes) -> Iterator[str]:
    fd, name = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield name
    finally:
        os.unlink(name)


def _crm_csv(data: st.DataObject) -> None:
    rows: list[list[str]] = []
    for n in range(data.draw(st.integers(1, 8))):
        row = crm_row(contact_id=f"CFZ{n:04d}")
        for _ in range(data.draw(st.integers(0, 4))):
            row[data.draw(st.integers(0, len(row) - 1))] = data.draw(CELL_VALUES)
        shape = data.draw(st.integers(0, 9))
        if shape == 0:
            row = row[: data.draw(st.integers(1, len(row) - 1))]
        elif shape == 1:
            row = [*row, *data.draw(st.lists(CELL_VALUES, min_size=1, max_size=3))]
        rows.append(row)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=data.draw(st.sampled_from(["\r\n", "\n"])))
    writer.writerow(CRM_HEADER)
    writer.writerows(rows)
    text = buffer.getvalue()
    expected = sum(1 for record in csv.reader(io.StringIO(text, newline="")) if record) - 1
    with _scratch_file(".csv", text.encode()) as path:
        items = list(read_crm(path, CONTACTS))
    assert sum(_settle(items)) == expected
    assert [i.position for i in items] == [f"row {n}" for n in range(1, expected + 1)]


def _crm_jsonl(data: st.DataObject) -> None:
    lines = []
    for n in range(data.draw(st.integers(1, 8))):
        record: Any = dict(zip(CRM_HEADER, crm_row(contact_id=f"CJZ{n:04d}"), strict=True))
        for _ in range(data.draw(st.integers(0, 4))):
            record[data.draw(st.sampled_from(CRM_HEADER))] = _fresh(data.draw(JSON_VALUES))
        if data.draw(st.integers(0, 9)) == 0:
            record = _fresh(data.draw(JSON_VALUES))
        line = orjson.dumps(record)
        if data.draw(st.integers(0, 9)) == 0:
            line = line[: data.draw(st.integers(1, len(line)))]  # truncated
        lines.append(line + b"\n")
    with _scratch_file(".jsonl", b"".join(lines)) as path:
        items = list(read_crm(path, CONTACTS))
    assert sum(_settle(items)) == sum(1 for line in lines if line.strip())


test_crm_csv_rows_each_end_as_one_item, test_crm_csv_rows_soak = _twice(
    _crm_csv, {"data": st.data()}
)
test_crm_jsonl_lines_each_end_as_one_item, test_crm_jsonl_lines_soak = _twice(
    _crm_jsonl, {"data": st.data()}
)

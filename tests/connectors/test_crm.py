"""CRM connector: mappings, per-row quarantine, format equivalence and a fuzzed reader."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.crm import (
    ROW_COLUMN,
    CrmSchemaError,
    MappingError,
    builtin_mapping,
    load_mapping,
    read_crm,
    read_crm_frames,
    unmapped_columns,
)
from connectors.crm import raw as crm_raw
from domain.records import Rejection, SourceRecord

CANARY = "Zzcanaryname"
HEADER = [
    "contact_id", "email", "first_name", "last_name", "phone", "birth_date", "postal_code",
    "mrn", "mrn_authority", "email_opt_in", "marketing_auth_signed", "marketing_auth_expires",
    "marketing_auth_revoked", "unsubscribed_at", "notes", "updated_at",
]  # fmt: skip
CONTACTS = builtin_mapping("contacts")


def row(**overrides: str) -> list[str]:
    """A good generator-shaped row; keyword arguments replace cells by column name."""
    base = {
        "contact_id": "C100000001", "email": "ann.lee@example.org", "first_name": "Ann",
        "last_name": "Lee", "phone": "(555) 555-0100", "birth_date": "1980-02-29",
        "postal_code": "02134", "mrn": "00012345", "mrn_authority": "HUBHOSP",
        "email_opt_in": "yes", "marketing_auth_signed": "2024-01-01",
        "marketing_auth_expires": "2026-01-01", "marketing_auth_revoked": "",
        "unsubscribed_at": "", "notes": "", "updated_at": "2024-05-01T08:15:00Z",
    }  # fmt: skip
    base.update(overrides)
    return [base[c] for c in HEADER]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n")  # the generator writes RFC 4180 CRLF
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def rejections(items: list[SourceRecord | Rejection]) -> list[Rejection]:
    return [i for i in items if isinstance(i, Rejection)]


def summary(items: list[SourceRecord | Rejection]) -> list[tuple[str, str]]:
    return [(i.position, i.reason if isinstance(i, Rejection) else "ok") for i in items]


# --- shared samples --------------------------------------------------------------------------


def test_datablist_customers(shared_data: Path) -> None:
    uri = str(shared_data / "crm" / "customers-100.csv")
    mapping = builtin_mapping("datablist_customers")
    items = list(read_crm(uri, mapping))
    assert [i.position for i in items] == [f"row {n}" for n in range(1, 101)]
    assert rejections(items) == []
    first = items[0]
    assert isinstance(first, SourceRecord) and first.entity == "contact"
    assert first.fields == {
        "subject_system": "crm",
        "subject_id": "DD37Cf93aecA6Dc",
        "given_name": "Sheryl",
        "family_name": "Baxter",
        "phone": "229.077.5154",
        "email": "zunigavanessa@smith.info",
        "effective_at": datetime(2020, 8, 24, tzinfo=UTC),
    }
    dropped = unmapped_columns(uri, mapping)
    assert set(dropped) == {"Index", "Company", "City", "Country", "Phone 2", "Website"}
    assert dropped["Website"] == 100


def test_datablist_leads(shared_data: Path) -> None:
    uri = str(shared_data / "crm" / "leads-100.csv")
    mapping = builtin_mapping("datablist_leads")
    items = list(read_crm(uri, mapping))
    assert len(items) == 100 and rejections(items) == []
    first = items[0]
    assert isinstance(first, SourceRecord)
    assert first.fields["subject_id"] == "0970F99ED4a2CE4"
    assert first.fields["email"] == "hatkinson@mclaughlin.com"  # Email 1, not Email 2
    assert "notes" not in first.fields  # free text is never mapped
    assert {"Notes", "Lead Owner", "Email 2", "Website"} <= set(unmapped_columns(uri, mapping))


# --- the generator's shape -------------------------------------------------------------------


def test_bad_rows_quarantine_with_the_right_codes(tmp_path: Path) -> None:
    rows = [
        row(),
        row(contact_id="C2", first_name=CANARY, birth_date=f"31/02/{CANARY}"),
        row(contact_id="C3", email_opt_in="maybe", last_name=CANARY),
        row(contact_id="", email=f"{CANARY}@example.org"),
        row(contact_id="C5", email=CANARY),
        ["C6", f"{CANARY}@example.org", CANARY],  # ragged: 3 fields
        row(contact_id="C7", notes=f'Says "hi", {CANARY}, call\nback', last_name="Lee, Jr."),
        row(contact_id="C8", updated_at=CANARY, marketing_auth_signed="2024-02-30"),
        [*row(contact_id="C9"), "extra"],  # ragged: 17 fields
        row(contact_id=" C10 ", email=" Ann.Lee@Example.org ", email_opt_in="Y"),
    ]
    path = write_csv(tmp_path / "contacts.csv", rows)
    items = list(read_crm(path, CONTACTS))
    assert summary(items) == [
        ("row 1", "ok"),
        ("row 2", "CRM_BAD_DATE"),
        ("row 3", "CRM_BAD_BOOLEAN"),
        ("row 4", "CRM_MISSING_KEY"),
        ("row 5", "CRM_BAD_EMAIL"),
        ("row 6", "CRM_RAGGED_ROW"),
        ("row 7", "ok"),
        ("row 8", "CRM_BAD_DATE"),
        ("row 9", "CRM_RAGGED_ROW"),
        ("row 10", "ok"),
    ]
    for r in rejections(items):
        assert CANARY.lower() not in r.message.lower(), r.message
        assert r.entity == "contact"
    by_row = {i.position: i for i in items}
    bad_date = by_row["row 2"]
    assert isinstance(bad_date, Rejection) and "'birth_date'" in bad_date.message
    # The payload is the raw row, re-serialised, for the encrypted quarantine.
    assert next(csv.reader(io.StringIO(bad_date.payload.decode()))) == rows[1]
    assert next(csv.reader(io.StringIO(by_row["row 6"].payload.decode()))) == rows[5]
    both = by_row["row 8"]
    assert isinstance(both, Rejection)
    assert "'marketing_auth_signed'" in both.message and "'updated_at'" in both.message

    good = by_row["row 1"]
    assert isinstance(good, SourceRecord)
    assert good.fields["birth_date"] == date(1980, 2, 29)
    assert good.fields["email_opt_in"] is True
    assert good.fields["marketing_auth_revoked"] is None
    assert good.fields["effective_at"] == datetime(2024, 5, 1, 8, 15, tzinfo=UTC)
    assert "notes" not in good.fields  # unmapped: default deny
    quoted = by_row["row 7"]
    assert isinstance(quoted, SourceRecord) and quoted.fields["family_name"] == "Lee, Jr."
    padded = by_row["row 10"]
    assert isinstance(padded, SourceRecord)
    assert padded.fields["subject_id"] == "C10"
    assert padded.fields["email"] == "Ann.Lee@Example.org"
    assert padded.fields["email_opt_in"] is True


def test_timestamps_in_other_iso_shapes(tmp_path: Path) -> None:
    shapes = {
        "2024-05-01T10:15:00+02:00": datetime(2024, 5, 1, 8, 15, tzinfo=UTC),
        "2024-05-01T08:15:00.250Z": datetime(2024, 5, 1, 8, 15, 0, 250000, tzinfo=UTC),
        "2024-05-01 08:15:00": datetime(2024, 5, 1, 8, 15, tzinfo=UTC),
        "2024-05-01": datetime(2024, 5, 1, tzinfo=UTC),
        "2024-05-01T08:15:00": datetime(2024, 5, 1, 8, 15, tzinfo=UTC),
    }
    rows = [row(contact_id=f"C{n}", updated_at=s) for n, s in enumerate(shapes)]
    items = list(read_crm(write_csv(tmp_path / "t.csv", rows), CONTACTS))
    assert [i.fields["effective_at"] for i in items] == list(shapes.values())  # type: ignore[union-attr]


def test_frames_api_matches_record_api(tmp_path: Path) -> None:
    rows = [row(contact_id=f"C{n}") for n in range(50)] + [row(contact_id="")]
    path = write_csv(tmp_path / "c.csv", rows)
    batches = list(read_crm_frames(path, CONTACTS))
    frame = pl.concat([b.frame for b in batches])
    assert frame.height == 50 and sum(len(b.rejections) for b in batches) == 1
    assert frame.columns[:3] == [ROW_COLUMN, "subject_system", "subject_id"]
    assert frame.schema["birth_date"] == pl.Date
    assert frame.schema["effective_at"] == pl.Datetime("us", "UTC")
    records = [i for i in read_crm(path, CONTACTS) if isinstance(i, SourceRecord)]
    assert [r.fields for r in records] == frame.drop(ROW_COLUMN).to_dicts()


def test_bom_latin1_and_bad_bytes(tmp_path: Path) -> None:
    text = io.StringIO()
    csv.writer(text).writerows([HEADER, row(first_name="Zoë")])
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.getvalue().encode())
    (item,) = read_crm(str(tmp_path / "bom.csv"), CONTACTS)
    assert isinstance(item, SourceRecord) and item.fields["given_name"] == "Zoë"

    (tmp_path / "latin1.csv").write_bytes(text.getvalue().encode("latin-1"))
    latin1 = CONTACTS.model_copy(update={"encoding": "latin-1"})
    (item,) = read_crm(str(tmp_path / "latin1.csv"), latin1)
    assert isinstance(item, SourceRecord) and item.fields["given_name"] == "Zoë"

    good = text.getvalue().encode()
    bad_line = ",".join(row(contact_id="C2", first_name="X")).encode().replace(b"X", b"\xff\xfe")
    (tmp_path / "bad.csv").write_bytes(good + bad_line + b"\r\n" + good.split(b"\r\n", 1)[1])
    items = list(read_crm(str(tmp_path / "bad.csv"), CONTACTS))
    assert summary(items) == [("row 1", "ok"), ("row 2", "BAD_ENCODING"), ("row 3", "ok")]
    assert rejections(items)[0].payload == bad_line  # the original bytes survive


def test_ragged_row_after_good_batches_were_handed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pyarrow blocks, so that good batches are yielded before the ragged row is met and
    # the csv-module fallback must resume exactly where they stopped.
    monkeypatch.setattr(crm_raw, "BLOCK_BYTES", 1 << 16)
    resumed_at: list[int] = []
    fallback = crm_raw._python_csv

    def spy(uri: str, mapping: Any, header: list[str], skip: int, payload_of: Any) -> Any:
        resumed_at.append(skip)
        return fallback(uri, mapping, header, skip, payload_of)

    monkeypatch.setattr(crm_raw, "_python_csv", spy)
    rows = [row(contact_id=f"C{n}") for n in range(20_000)]
    rows[18_000] = ["C18000", "short"]
    path = write_csv(tmp_path / "big.csv", rows)
    n = bad = 0
    for item in read_crm(path, CONTACTS):
        n += 1
        assert item.position == f"row {n}"
        if isinstance(item, Rejection):
            bad += 1
            assert (item.position, item.reason) == ("row 18001", "CRM_RAGGED_ROW")
        else:
            assert item.fields["subject_id"] == f"C{n - 1}"
    assert (n, bad) == (20_000, 1)
    assert len(resumed_at) == 1 and 0 < resumed_at[0] <= 18_000


def test_gzipped_csv(tmp_path: Path) -> None:
    plain = write_csv(tmp_path / "c.csv", [row(), row(contact_id="")])
    gz = tmp_path / "c.csv.gz"
    gz.write_bytes(gzip.compress(Path(plain).read_bytes()))
    assert summary(list(read_crm(str(gz), CONTACTS))) == [
        ("row 1", "ok"),
        ("row 2", "CRM_MISSING_KEY"),
    ]


# --- CSV, JSONL and Parquet agree ------------------------------------------------------------


def test_jsonl_and_parquet_give_the_same_records(tmp_path: Path) -> None:
    rows = [
        row(),
        row(contact_id="C2", birth_date="1980-13-01"),
        row(contact_id="C3", email_opt_in="nope"),
        row(contact_id=""),
        row(contact_id="C5", email="no-at-sign"),
        row(contact_id="C6", notes='quoted, "commas"\nand a newline', last_name="O'Neil, Jr."),
        row(contact_id="C7", unsubscribed_at="2024-06-01T00:00:00+00:00", email_opt_in="NO"),
    ]
    dicts = [dict(zip(HEADER, r, strict=True)) for r in rows]
    csv_path = write_csv(tmp_path / "c.csv", rows)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes(b"\n".join(orjson.dumps(d) for d in dicts) + b"\n")
    parquet = tmp_path / "c.parquet"
    pl.DataFrame(dicts).write_parquet(parquet)

    def comparable(uri: str) -> list[tuple[str, Any]]:
        return [
            (i.position, i.fields if isinstance(i, SourceRecord) else (i.reason, i.message))
            for i in read_crm(uri, CONTACTS)
        ]

    expected = comparable(csv_path)
    assert len(expected) == len(rows)
    assert comparable(str(jsonl)) == expected
    assert comparable(str(parquet)) == expected
    # Each format keeps its own raw payload.
    jsonl_rej = rejections(list(read_crm(str(jsonl), CONTACTS)))[0]
    assert orjson.loads(jsonl_rej.payload) == dicts[1]
    pq_rej = rejections(list(read_crm(str(parquet), CONTACTS)))[0]
    assert orjson.loads(pq_rej.payload) == dicts[1]


def test_jsonl_bad_lines_and_typed_values(tmp_path: Path) -> None:
    good = dict(zip(HEADER, row(), strict=True))
    typed = {**good, "contact_id": 42, "email_opt_in": True, "nickname": CANARY}
    lines = [
        orjson.dumps(good),
        b"",
        b"{not json " + CANARY.encode(),
        orjson.dumps([CANARY]),
        orjson.dumps(typed),
    ]
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = list(read_crm(str(path), CONTACTS))
    assert summary(items) == [
        ("row 1", "ok"),
        ("row 2", "NOT_JSON"),
        ("row 3", "NOT_JSON"),
        ("row 4", "ok"),
    ]
    assert items[3].fields["subject_id"] == "42" and items[3].fields["email_opt_in"] is True  # type: ignore[union-attr]
    assert all(CANARY not in r.message for r in rejections(items))
    assert unmapped_columns(str(path), CONTACTS) == {"notes": 0, "nickname": 1}


# --- mappings --------------------------------------------------------------------------------


def test_mapping_errors_name_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nkey: id\ncolumns:\n  id: {field: subject_idd}\n  b: {field: email, type: boolx}\n"
    )
    with pytest.raises(MappingError) as err:
        load_mapping(bad)
    assert str(bad) in str(err.value)
    assert "columns.id.field" in str(err.value) and "columns.b.type" in str(err.value)

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ncolumns: [\n")
    with pytest.raises(MappingError, match="invalid YAML at line"):
        load_mapping(broken)
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "missing.yaml")
    nokey = tmp_path / "nokey.yaml"
    nokey.write_text("name: x\nkey: id\ncolumns:\n  email: {field: email}\n")
    with pytest.raises(MappingError, match="key column 'id'"):
        load_mapping(nokey)


def test_file_without_a_mapped_column_fails_loudly(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row()[:-1]], header=HEADER[:-1])
    with pytest.raises(CrmSchemaError, match="updated_at"):
        list(read_crm(path, CONTACTS))


# --- fuzz ------------------------------------------------------------------------------------

cells = st.one_of(
    st.text(max_size=12),
    st.text(max_size=6).map(lambda s: CANARY + s),  # must never reach a message
    st.sampled_from(
        ["", " ", "yes", "NO", "1980-01-01", "2024-01-01T00:00:00Z", "a@b.co", '"', ","]
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.lists(cells, min_size=14, max_size=18), min_size=1, max_size=6),
    fmt=st.sampled_from(["csv", "jsonl"]),
)
def test_arbitrary_cells_never_crash(tmp_path: Path, data: list[list[str]], fmt: str) -> None:
    if fmt == "csv":
        path = tmp_path / "fuzz.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(HEADER)
            w.writerows(data)
    else:
        path = tmp_path / "fuzz.jsonl"
        path.write_bytes(
            b"".join(orjson.dumps(dict(zip(HEADER, r, strict=False))) + b"\n" for r in data)
        )
    items = list(read_crm(str(path), CONTACTS))
    assert [i.position for i in items] == [f"row {n}" for n in range(1, len(data) + 1)]
    for item, cells_ in zip(items, data, strict=True):
        if fmt == "csv" and len(cells_) != len(HEADER):
            assert isinstance(item, Rejection) and item.reason == "CRM_RAGGED_ROW"
        if isinstance(item, Rejection):
            assert CANARY not in item.message

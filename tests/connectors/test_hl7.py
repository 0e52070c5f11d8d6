"""Tests for the HL7 v2 connector: framing, fast parsing, mapping, hl7apy equivalence, ACKs."""

from __future__ import annotations

import gzip
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The repository root is not installed into the venv; make `connectors`/`domain` importable
# however pytest is started (`.venv/bin/pytest` does not put the cwd on sys.path).
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connectors.hl7 import fastparse  # noqa: E402
from connectors.hl7.ack import build_ack  # noqa: E402
from connectors.hl7.bench import bench_fast, corpus  # noqa: E402
from connectors.hl7.errors import Hl7Error  # noqa: E402
from connectors.hl7.framing import iter_frames  # noqa: E402
from connectors.hl7.mapping import SUPPORTED_TYPES, map_message, read_header  # noqa: E402
from connectors.hl7.reader import (  # noqa: E402
    Hl7Message,
    Hl7Tally,
    decode_message,
    read_hl7,
    read_hl7_bytes,
    read_hl7_chunks,
)
from connectors.hl7.reference import Unreadable, parse_reference  # noqa: E402
from domain.reasons import REASONS  # noqa: E402

SAMPLES = Path(os.environ.get("HL7_SAMPLE_DIR", "/work/shared/data/hl7"))
SAMPLE_FILES = sorted(SAMPLES.glob("*.hl7"))
needs_samples = pytest.mark.skipif(not SAMPLE_FILES, reason=f"no HL7 samples in {SAMPLES}")

# Samples hl7apy 1.3.5 cannot parse at all, and why. ORU-R01-01 declares v2.5.1 (MSH-12) but
# carries PRT segments, which only exist from v2.7; hl7apy raises InvalidName for them even
# at TOLERANT validation. Its OBX mapping is checked against hl7apy on a synthetic v2.5.1 ORU
# below instead.
HL7APY_UNPARSABLE = {"ORU-R01-01.hl7": "InvalidName"}

# What each supported sample yields (entities in order); every other sample is a type the
# hub does not ingest and must come back as exactly one HL7_UNSUPPORTED_TYPE rejection.
EXPECTED_ENTITIES = {
    "ADT-A01-01.hl7": ["patient", "encounter", "observation"],
    "ADT-A03-01.hl7": ["patient", "encounter", "observation"],
    "ADT-A04-01.hl7": ["patient", "encounter", "observation"],
    "ADT-A08-01.hl7": ["patient", "encounter", "observation"],
    "ADT-A28-01.hl7": ["patient", "observation"],
    "ADT-A31-01.hl7": ["patient", "observation"],
    "ADT-A40-01.hl7": ["patient", "merge"],
    "ORU-R01-01.hl7": ["patient"] + ["observation"] * 5,
    "SIU-S12-01.hl7": ["patient", "appointment", "observation"],
    "SIU-S13-01.hl7": ["patient", "appointment"],
    "SIU-S14-01.hl7": ["patient", "appointment"],
    "SIU-S15-01.hl7": ["patient", "appointment"],
    "SIU-S26-01.hl7": ["patient", "appointment"],
    "VXU-V04-01.hl7": ["patient", "observation", "immunization"] + ["observation"] * 4,
}

CANARY = "QXCANARY7731"


def adt(
    *,
    pid7: str = "19800101",
    control: str = "MSG0001",
    kind: str = "ADT^A04^ADT_A01",
    pid: bool = True,
    name: str = "DOE^JANE",
    sent: str = "20240105123000-0500",
) -> str:
    """A small v2.5.1 ADT message, segments separated by CR."""
    segments = [
        f"MSH|^~\\&|REG|HOSP|HUB|AUD|{sent}||{kind}|{control}|P|2.5.1",
        "EVN|A04|20240105123000",
    ]
    if pid:
        segments.append(
            f"PID|1||12345^^^HOSP^MR~999^^^SSA^SS||{name}||{pid7}|F|||1 MAIN ST^^SPRINGFIELD^IL"
            "^62701^USA||^PRN^PH^^1^217^5550100~^NET^Internet^jane@example.org"
        )
    segments.append("PV1|1|O|CLINIC^101^A")
    return "\r".join(segments)


def messages(data: bytes, chunk: int | None = None) -> list[Hl7Message]:
    if chunk is None:
        return list(read_hl7_bytes(data))
    return list(read_hl7_chunks(data[i : i + chunk] for i in range(0, len(data), chunk)))


def records_of(result: list[Hl7Message]) -> list[tuple[str, str, dict]]:
    return [(r.entity, r.position, r.fields) for m in result for r in m.records]


def _outcome(message: Hl7Message) -> tuple:
    rejection = message.rejection
    reason = (rejection.reason, rejection.message) if rejection is not None else None
    return message.position, reason, [(r.entity, r.position, r.fields) for r in message.records]


def assert_accounted(result: list[Hl7Message]) -> None:
    """Every message ends in records or exactly one rejection, and the counts reconcile."""
    tally = Hl7Tally()
    for i, message in enumerate(result, start=1):
        tally.add(message)
        assert message.index == i
        if message.rejection is None:
            assert message.records, "a loaded message must yield records"
        else:
            assert not message.records
            assert message.rejection.reason in REASONS
            assert message.rejection.message
            assert "internal error" not in message.rejection.message
    assert tally.read == len(result) == tally.loaded + tally.quarantined


# --- samples -----------------------------------------------------------------------------


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_sample_loads_or_is_rejected_with_a_reason(path: Path) -> None:
    result = list(read_hl7(str(path)))
    assert_accounted(result)
    assert len(result) == 1  # one MSH per sample file
    message = result[0]
    expected = EXPECTED_ENTITIES.get(path.name)
    if expected is None:
        assert message.rejection is not None
        assert message.rejection.reason == "HL7_UNSUPPORTED_TYPE"
        assert message.rejection.message == "MSH-9: message type is not one the hub ingests"
        assert message.message_type not in SUPPORTED_TYPES
    else:
        assert message.rejection is None, message.rejection
        assert [r.entity for r in message.records] == expected
        assert message.message_type in SUPPORTED_TYPES
        for record in message.records:
            assert record.position.startswith(message.position)
            assert record.fields["subject_system"] == "mrn"
            assert record.fields["effective_at"].tzinfo is not None


@needs_samples
def test_samples_counts_reconcile_when_concatenated_into_one_file(tmp_path: Path) -> None:
    # cat *.hl7 > all.hl7: some files start with a BOM, which then sits mid-stream.
    data = b"".join(path.read_bytes().rstrip(b"\n") + b"\n" for path in SAMPLE_FILES)
    (tmp_path / "all.hl7").write_bytes(data)
    result = list(read_hl7(str(tmp_path / "all.hl7"), chunk_size=4096))
    assert_accounted(result)
    assert len(result) == len(SAMPLE_FILES)
    loaded = sum(1 for m in result if m.loaded)
    assert loaded == len(EXPECTED_ENTITIES)


@needs_samples
def test_sample_field_values() -> None:
    (adt_a01,) = read_hl7(str(SAMPLES / "ADT-A01-01.hl7"))
    patient = adt_a01.records[0].fields
    assert patient["subject_id"] == "test1|PATID1234"  # PID-3 repetition typed MR, CX-4.1
    assert patient["mrn"] == "PATID1234"
    assert patient["family_name"] == "EVERYMAN"
    assert patient["given_name"] == "ADAM"
    assert str(patient["birth_date"]) == "1988-08-18"  # 198808181126+0215: date as written
    assert patient["sex"] == "male"
    assert patient["address_line"] == "1000 Hospital Lane, Ste. 123"
    assert patient["city"] == "Ann Arbor"  # trailing blank trimmed
    assert patient["effective_at"].isoformat() == "1989-08-18T09:11:00+00:00"  # +0215 -> UTC

    (merge,) = read_hl7(str(SAMPLES / "ADT-A40-01.hl7"))
    survivor, merged = merge.records
    assert survivor.fields["subject_id"] == "BCBS|12345"
    assert merged.entity == "merge"
    assert merged.fields["subject_id"] == "BCBS|12345"
    assert merged.fields["prior_subject_id"] == "BCBS|56789"

    (oru,) = read_hl7(str(SAMPLES / "ORU-R01-01.hl7"))
    numeric = [r.fields for r in oru.records if r.fields.get("value_number") is not None]
    assert numeric == [
        {
            **numeric[0],
            "code_system": "loinc",
            "code": "8867-4",
            "value_number": 27.0,  # first repetition of OBX-5 "27~25"
            "status": "registered",
        }
    ]

    statuses = {}
    for trigger in ("S12", "S13", "S14", "S15", "S26"):
        (siu,) = read_hl7(str(SAMPLES / f"SIU-{trigger}-01.hl7"))
        appointment = siu.records[1].fields
        statuses[trigger] = appointment["status"]
        assert appointment["source_id"] == "12345"  # SCH-1
        assert appointment["start_at"].isoformat() == "2020-10-01T09:11:00+00:00"  # SCH-11.4
    assert statuses == {
        "S12": "booked",
        "S13": "booked",
        "S14": "modified",
        "S15": "cancelled",
        "S26": "noshow",
    }

    (vxu,) = read_hl7(str(SAMPLES / "VXU-V04-01.hl7"))
    (shot,) = [r.fields for r in vxu.records if r.entity == "immunization"]
    assert (shot["code_system"], shot["code"]) == ("ndc", "49281021588")
    assert str(shot["occurrence_date"]) == "2021-08-18"
    assert shot["source_id"] == "13696"  # ORC-3 of the order the RXA belongs to


def test_message_type_comes_from_msh9_not_the_file_name(tmp_path: Path) -> None:
    lying = tmp_path / "ORU-R01-99.hl7"
    lying.write_bytes(adt().encode())
    (message,) = read_hl7(str(lying))
    assert message.message_type == "ADT^A04"
    assert [r.entity for r in message.records] == ["patient", "encounter"]
    other = tmp_path / "ADT-A04-99.hl7"
    other.write_bytes(adt(kind="MDM^T02^MDM_T02").encode())
    (message,) = read_hl7(str(other))
    assert message.message_type == "MDM^T02"
    assert message.rejection is not None
    assert message.rejection.reason == "HL7_UNSUPPORTED_TYPE"


# --- framing -----------------------------------------------------------------------------


def _variants(first: str, second: str) -> dict[str, bytes]:
    pair = [first, second]
    lf = "\n".join(m.replace("\r", "\n") for m in pair) + "\n"
    return {
        "cr": ("\r".join(pair) + "\r").encode(),
        "lf": lf.encode(),
        "crlf": lf.replace("\n", "\r\n").encode(),
        "bom": b"\xef\xbb\xbf" + lf.encode(),
        "bom-each": b"".join(
            b"\xef\xbb\xbf" + m.replace("\r", "\n").encode() + b"\n" for m in pair
        ),
        "mllp": b"".join(b"\x0b" + m.encode() + b"\x1c\r" for m in pair),
        "mllp-lf": b"".join(b"\x0b" + m.replace("\r", "\n").encode() + b"\x1c\n" for m in pair),
        "batch": ("FHS|^~\\&|SND\rBHS|^~\\&|SND\r" + "\r".join(pair) + "\rBTS|2\rFTS|1\r").encode(),
        "batch-crlf": (
            "FHS|^~\\&|SND\r\nBHS|^~\\&|SND\r\n"
            + "\r\n".join(m.replace("\r", "\r\n") for m in pair)
            + "\r\nBTS|2\r\nFTS|1\r\n"
        ).encode(),
        "blank-lines": (
            "\n\n" + "\n\n".join(m.replace("\r", "\n") for m in pair) + "\n\n"
        ).encode(),
    }


@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 64])
def test_separator_bom_mllp_and_batch_variants_give_identical_records(chunk: int | None) -> None:
    first, second = adt(control="A1"), adt(control="A2", name="ROE^RICHARD")
    expected = records_of(messages(("\r".join([first, second])).encode()))
    assert [e[0] for e in expected] == ["patient", "encounter", "patient", "encounter"]
    for label, data in _variants(first, second).items():
        result = messages(data, chunk)
        assert_accounted(result)
        assert len(result) == 2, label  # batch envelopes are not messages
        assert records_of(result) == expected, label


@needs_samples
def test_sample_in_every_framing_gives_identical_records() -> None:
    text = (SAMPLES / "VXU-V04-01.hl7").read_bytes().decode("utf-8-sig").strip()
    cr = text.replace("\n", "\r")
    expected = records_of(messages(cr.encode()))
    for label, data in _variants(cr, cr).items():
        result = messages(data, 5)
        assert records_of(result[:1]) == expected, label
        assert len(result) == 2, label


def test_frames_are_normalised_bytes() -> None:
    data = b"\xef\xbb\xbfMSH|^~\\&|A\r\nPID|1\n\nMSH|^~\\&|B\x1c\r\x0bMSH|^~\\&|C\r"
    frames = list(iter_frames([data[i : i + 2] for i in range(0, len(data), 2)]))
    assert [f.data for f in frames] == [b"MSH|^~\\&|A\rPID|1", b"MSH|^~\\&|B", b"MSH|^~\\&|C"]
    assert all(f.has_msh for f in frames)


def test_text_before_the_first_msh_is_one_missing_msh_rejection() -> None:
    data = ("PID|1||" + CANARY + "^^^H^MR\rNTE|1\r" + adt()).encode()
    first, second = messages(data)
    assert first.rejection is not None
    assert first.rejection.reason == "HL7_MISSING_MSH"
    assert CANARY not in first.rejection.message
    assert first.rejection.payload.startswith(b"PID|1||")  # kept for the encrypted quarantine
    assert second.loaded
    # Blank lines and batch headers before the first MSH are not a bad message.
    (only,) = messages(b"\n\nFHS|^~\\&\nBHS|^~\\&\n" + adt().encode())
    assert only.loaded and only.index == 1


def test_no_msh_at_all() -> None:
    (only,) = messages(b"just some text\nand more")
    assert only.rejection is not None and only.rejection.reason == "HL7_MISSING_MSH"
    assert messages(b"") == []
    assert messages(b"\r\n \n") == []


def test_streams_gzip_through_smart_open_in_small_chunks(tmp_path: Path) -> None:
    path = tmp_path / "feed.hl7.gz"
    with gzip.open(path, "wb") as out:
        for i in range(50):
            out.write(adt(control=f"C{i}").replace("\r", "\n").encode() + b"\n")
    result = list(read_hl7(str(path), chunk_size=37))
    assert_accounted(result)
    assert [m.control_id for m in result] == [f"C{i}" for i in range(50)]
    assert all(m.loaded for m in result)


# --- parsing -----------------------------------------------------------------------------


def _redelimit(text: str, new: str = "#$*@%") -> str:
    """Re-encode a message with other delimiters (field, comp, rep, escape, sub)."""
    old = "|^~\\&"
    codes = dict(zip(new, "FSRET", strict=True))
    esc = new[3]
    out = []
    for char in text:
        if char in old:
            out.append(new[old.index(char)])
        elif char in new:  # a literal that is a delimiter now: escape it
            out.append(f"{esc}{codes[char]}{esc}")
        else:
            out.append(char)
    return "".join(out)


def test_custom_delimiters_give_the_same_records() -> None:
    # "#", "$" and "@" are plain text here but delimiters in the custom set, where they must
    # travel escaped; "&" is a real subcomponent separator in PID-5.
    text = adt(name="O#BRIEN$&JR^JANE@HOME")
    custom = _redelimit(text)
    assert custom.startswith("MSH#$*@%#REG#")
    assert "O@F@BRIEN@S@%JR$JANE@E@HOME" in custom
    assert records_of(messages(custom.encode())) == records_of(messages(text.encode()))
    (message,) = messages(custom.encode())
    patient = message.records[0].fields
    assert (patient["family_name"], patient["given_name"]) == ("O#BRIEN$", "JANE@HOME")
    assert patient["email"] == "jane@example.org"  # "@E@" in the custom message
    # An escape sequence stands for the delimiter the message declares, not for "|^~\&".
    (escaped,) = messages(_redelimit(adt()).replace("DOE$JANE", "DOE@S@X$JANE").encode())
    assert escaped.records[0].fields["family_name"] == "DOE$X"


@needs_samples
def test_custom_delimiters_on_a_sample_match_the_original_and_hl7apy() -> None:
    text = (SAMPLES / "ADT-A01-01.hl7").read_text(encoding="utf-8-sig").strip()
    text = text.replace("\n", "\r")
    custom = _redelimit(text)
    assert records_of(messages(custom.encode())) == records_of(messages(text.encode()))
    reference = map_message(parse_reference(custom), "p")
    fast = map_message(fastparse.parse(custom), "p")
    assert [(r.entity, r.fields) for r in fast] == [(r.entity, r.fields) for r in reference]


def test_unescaping() -> None:
    msh = "MSH|^~\\&|A|B|C|D|20240101||ADT^A04|1|P|2.5"
    seg = "ZZZ|a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f|\\X41C3A9\\|x\\H\\y\\N\\z|\\Q\\|\\F|\\X4\\|\\XZZ\\"
    message = fastparse.parse(f"{msh}\r{seg}")
    zzz = message.first("ZZZ")
    assert zzz is not None
    assert zzz.get(1) == "a|b^c&d~e\\f"
    assert zzz.get(2) == "Aé"
    assert zzz.get(3) == "xyz"
    assert [zzz.get(4), zzz.get(5), zzz.get(6), zzz.get(7)] == ["\\Q\\", "\\F", "\\X4\\", "\\XZZ\\"]
    reference = parse_reference(f"{msh}\r{seg}").first("ZZZ")
    assert reference is not None
    assert [reference.get(i) for i in range(1, 8)] == [zzz.get(i) for i in range(1, 8)]


@pytest.mark.parametrize(
    "msh",
    [
        "MSH|^~\\",  # too short
        "MSH|^~|A",  # two encoding characters
        "MSH|^^\\&|A",  # repeated
        "MSHA^~\\&A",  # letter as separator
        "MSH|^~ &|A",  # blank
    ],
)
def test_bad_delimiters(msh: str) -> None:
    (message,) = messages(f"{msh}\rPID|1||1^^^A^MR".encode())
    assert message.rejection is not None
    assert message.rejection.reason == "HL7_BAD_DELIMITERS"


def test_version_and_type_come_from_msh() -> None:
    parsed = fastparse.parse(adt())
    header = read_header(parsed)
    assert (header.code, header.trigger, header.control_id) == ("ADT", "A04", "MSG0001")
    msh = parsed.first("MSH")
    assert msh is not None and msh.get(12) == "2.5.1"


# --- mapping rejections --------------------------------------------------------------------


def test_adt_without_pid_is_missing_pid() -> None:
    (message,) = messages(adt(pid=False).encode())
    assert message.rejection is not None
    assert message.rejection.reason == "HL7_MISSING_PID"
    (empty,) = messages(adt().replace("12345^^^HOSP^MR~999^^^SSA^SS", "").encode())
    assert empty.rejection is not None and empty.rejection.reason == "HL7_MISSING_PID"
    assert empty.rejection.message == "PID-3: no patient identifier"


def test_bad_birth_date_names_pid7_and_never_the_value() -> None:
    (message,) = messages(adt(pid7=CANARY).encode())
    assert message.rejection is not None
    assert message.rejection.reason == "BAD_DATE"
    assert "PID-7" in message.rejection.message
    assert CANARY not in message.rejection.message
    assert CANARY not in message.position
    with pytest.raises(Hl7Error) as caught:
        map_message(fastparse.parse(adt(pid7=CANARY)), "message 1")
    assert CANARY not in str(caught.value)
    for bad in ("19801301", "1980", "198001", "1980-01-01", "19800101+2500"):
        (again,) = messages(adt(pid7=bad).encode())
        assert again.rejection is not None and again.rejection.reason == "BAD_DATE", bad


def test_tolerated_birth_date_shapes() -> None:
    for shape in ("19800101", "198001011230", "198001011230+0215", "19800101123045.12-0500"):
        (message,) = messages(adt(pid7=shape).encode())
        assert str(message.records[0].fields["birth_date"]) == "1980-01-01", shape


def test_missing_or_bad_msh7() -> None:
    (bad,) = messages(adt(sent=CANARY).encode())
    assert bad.rejection is not None and bad.rejection.reason == "BAD_DATE"
    assert bad.rejection.message.startswith("MSH-7")
    (short,) = messages(adt(sent="2024").encode())
    assert short.records[0].fields["effective_at"].isoformat() == "2024-01-01T00:00:00+00:00"


def test_numeric_observation_and_bad_nm() -> None:
    oru = "\r".join(
        [
            "MSH|^~\\&|LAB|H|HUB|A|20240101120000||ORU^R01^ORU_R01|L1|P|2.5.1",
            "PID|1||77^^^LAB^MR||DOE^JOHN||19700101|M",
            "OBR|1|||GLU^Glucose^L|||20240101083000+0100",
            "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^^UCUM|||||F",
            "OBX|2|CWE|94500-6^SARS-CoV-2 RNA^LN||260373001^Detected^SCT||||||F|||20240101090000",
        ]
    )
    (message,) = messages(oru.encode())
    _patient, glucose, covid = message.records
    assert glucose.fields["value_number"] == 5.4
    assert glucose.fields["unit"] == "mmol/L"
    assert glucose.fields["code_system"] == "loinc"
    assert glucose.fields["effective_at_clinical"].isoformat() == "2024-01-01T07:30:00+00:00"
    assert covid.fields["value_text"] == "260373001"
    assert covid.fields["value_number"] is None
    assert covid.fields["effective_at_clinical"].isoformat() == "2024-01-01T09:00:00+00:00"
    (bad,) = messages(oru.replace("||5.4|", f"||{CANARY}|").encode())
    assert bad.rejection is not None and bad.rejection.reason == "BAD_VALUE"
    assert bad.rejection.message.startswith("OBX-5 (OBX #1)")
    assert CANARY not in bad.rejection.message
    # The same message through hl7apy: the mapping reads identical values.
    reference = map_message(parse_reference(oru), "p")
    fast = map_message(fastparse.parse(oru), "p")
    assert [(r.entity, r.fields) for r in fast] == [(r.entity, r.fields) for r in reference]


def test_vxu_prefers_the_cvx_coding() -> None:
    vxu = "\r".join(
        [
            "MSH|^~\\&|IIS|H|HUB|A|20240101||VXU^V04^VXU_V04|V1|P|2.5.1",
            "PID|1||55^^^IIS^MR||DOE^KID||20200101|F",
            "ORC|RE||IZ-9",
            "RXA|0|1|20240102||49281-0215-88^TENIVAC^NDC^115^Tdap^CVX|0.5|mL||00",
        ]
    )
    (message,) = messages(vxu.encode())
    shot = message.records[1].fields
    assert (shot["code_system"], shot["code"], shot["display"]) == ("cvx", "115", "Tdap")
    assert shot["source_id"] == "IZ-9"
    assert shot["status"] == "completed"


def test_a40_merges_each_pid_with_its_mrg() -> None:
    a40 = "\r".join(
        [
            "MSH|^~\\&|REG|H|HUB|A|20240101||ADT^A40^ADT_A39|M1|P|2.3.1",
            "EVN|A40|20240101",
            "PID|1||100^^^H^MR",
            "MRG|90^^^H^MR",
            "PID|1||200^^^H^MR",
            "MRG|80^^^H^MR~81^^^H^PI",
        ]
    )
    (message,) = messages(a40.encode())
    pairs = [
        (r.entity, r.fields["subject_id"], r.fields.get("prior_subject_id"))
        for r in message.records
    ]
    assert pairs == [
        ("patient", "H|100", None),
        ("merge", "H|100", "H|90"),
        ("patient", "H|200", None),
        ("merge", "H|200", "H|80"),
    ]
    (no_mrg,) = messages(a40.split("\rMRG|90")[0].encode())
    assert no_mrg.rejection is not None and no_mrg.rejection.reason == "MISSING_FIELD"


# --- hl7apy equivalence ------------------------------------------------------------------


def _same(fast: str, reference: str) -> bool:
    """Equal, allowing for hl7apy storing SI/NM leaves as numbers ("001" -> "1")."""
    if fast == reference:
        return True
    try:
        return float(fast) == float(reference)
    except ValueError:
        return False


def _fast_positions(
    segment: fastparse.FastSegment, text: str
) -> Iterator[tuple[int, int, int, int]]:
    """Every non-empty (field, rep, comp, sub) position of a segment, from its raw text."""
    d = segment.d
    count = len(text.split(d.field)) + (1 if segment.name == "MSH" else 0)
    for field in range(1, count):
        raw = segment.raw(field)
        if segment.name == "MSH" and field <= 2:
            yield field, 1, 1, 1
        elif raw:
            for r, rep in enumerate(raw.split(d.rep), start=1):
                for c, comp in enumerate(rep.split(d.comp), start=1):
                    for s, sub in enumerate(comp.split(d.sub), start=1):
                        if sub.strip():
                            yield field, r, c, s


@needs_samples
def test_fast_parse_matches_hl7apy_on_every_sample() -> None:
    unparsable: dict[str, str] = {}
    compared = skipped = 0
    for path in SAMPLE_FILES:
        for frame in iter_frames([path.read_bytes()]):
            text = decode_message(frame.data)
            fast = fastparse.parse(text)
            try:
                reference = parse_reference(text)
            except Exception as err:  # hl7apy raises many exception types
                unparsable[path.name] = type(err).__name__
                continue
            fast_segments = fast.segments()
            ref_segments = reference.segments()
            assert [s.name for s in fast_segments] == [s.name for s in ref_segments], path.name
            lines = text.split("\r")
            for fseg, rseg, line in zip(fast_segments, ref_segments, lines, strict=True):
                positions = set(_fast_positions(fseg, line))
                positions |= {position for position, _value in rseg.leaves()}
                for field, rep, comp, sub in sorted(positions):
                    try:
                        expected = rseg.get(field, comp, sub, rep)
                    except Unreadable:
                        skipped += 1
                        continue
                    got = fseg.get(field, comp, sub, rep)
                    assert _same(got, expected), (path.name, fseg.name, field, rep, comp, sub)
                    compared += 1
            # The mapping reads the same values through both parses.
            try:
                fast_out = [(r.entity, r.fields) for r in map_message(fast, "p")]
            except Hl7Error as err:
                fast_out = [(err.reason, {"text": err.text})]
            try:
                ref_out = [(r.entity, r.fields) for r in map_message(reference, "p")]
            except Hl7Error as err:
                ref_out = [(err.reason, {"text": err.text})]
            assert fast_out == ref_out, path.name
    assert unparsable == HL7APY_UNPARSABLE
    # hl7apy keeps no position for fields its tables do not define for the version (for
    # example EVN-1 in v2.8); those few are skipped, everything else was compared.
    assert compared > 25_000
    assert skipped < compared / 20


# --- ACK -----------------------------------------------------------------------------------


def _parse_ack(text: str) -> Any:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    return parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)


@pytest.mark.parametrize(
    ("code", "reason"), [("AA", None), ("AE", "BAD_DATE"), ("AR", "HL7_UNSUPPORTED_TYPE")]
)
def test_ack_round_trips_through_hl7apy(code: str, reason: str | None) -> None:
    incoming = adt(name=f"{CANARY}^JANE", control="CTRL-42")
    ack = build_ack(incoming, code, reason)  # type: ignore[arg-type]
    assert CANARY not in ack
    parsed = _parse_ack(ack)
    assert parsed.msa.msa_1.to_er7() == code
    assert parsed.msa.msa_2.to_er7() == "CTRL-42"
    assert parsed.msh.msh_3.to_er7() == "HUB"  # sender and receiver swapped
    assert parsed.msh.msh_5.to_er7() == "REG"
    assert parsed.msh.msh_9.to_er7() == "ACK^A04^ACK"
    assert parsed.msh.msh_12.to_er7() == "2.5.1"
    if reason is None:
        assert "ERR" not in [s.name for s in parsed.children]
    else:
        assert parsed.err.err_5.to_er7().split("^")[0] == reason
        assert parsed.err.err_4.to_er7() == "E"


@needs_samples
def test_ack_for_v28_sample_keeps_err_fields_in_place() -> None:
    text = (SAMPLES / "ADT-A01-01.hl7").read_text(encoding="utf-8-sig")
    ack = build_ack(text, "AE", "HL7_MISSING_PID")
    err = next(s for s in ack.split("\r") if s.startswith("ERR")).split("|")
    assert err[3].startswith("101^")  # ERR-3, not shifted by hl7apy's v2.8 tables
    assert err[5].startswith("HL7_MISSING_PID^")
    assert _parse_ack(ack).msa.msa_2.to_er7() == "MSG00001"


def test_ack_with_custom_delimiters_and_old_version() -> None:
    incoming = _redelimit(adt()).replace("#2.5.1", "#2.3")
    ack = build_ack(incoming, "AE", "BAD_DATE")
    assert ack.startswith("MSH#$*@%#")
    parsed = _parse_ack(ack)
    assert parsed.msa.msa_2.to_er7() == "MSG0001"
    assert parsed.msa.msa_3.to_er7() == "BAD_DATE"  # pre-2.5 home of the error text


def test_ack_for_garbage_is_a_reject_without_control_id() -> None:
    ack = build_ack(CANARY, "AR", "HL7_MISSING_MSH")
    assert CANARY not in ack
    assert _parse_ack(ack).msa.msa_1.to_er7() == "AR"
    with pytest.raises(ValueError):
        build_ack(adt(), "XX", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_ack(adt(), "AE", "NOT_A_REASON")


# --- robustness (hypothesis) ---------------------------------------------------------------

_HL7ISH = st.text(alphabet="MSHPIDV0123|^~\\&#$\r\n\x0b\x1c \ufeffABCXZ.+-", max_size=300)
_SEGMENTS = st.sampled_from(
    [
        "MSH|^~\\&|A|B|C|D|20240101||ADT^A04|1|P|2.5",
        "MSH|^~\\&|A|B|C|D|20240101||SIU^S12|2|P|2.5",
        "MSH|^~\\&|A|B|C|D|20240101||VXU^V04|3|P|2.5",
        "MSH|^~\\&|A|B|C|D|20240101||ADT^A40|4|P|2.5",
        "MSH#$*@%#A#B#C#D#20240101##ORU$R01#5#P#2.5",
        "PID|1||123^^^H^MR||DOE^J||19800101|F",
        "PID|1||",
        "PV1|1|I",
        "OBX|1|NM|1-1^X^LN||abc",
        "OBX|1|SN|1-1^X^LN||=^1",
        "RXA|0|1|2024",
        "SCH|1",
        "MRG|9^^^H^MR",
        "BHS|^~\\&",
        "BTS|1",
    ]
)
_STREAMS = st.lists(st.one_of(_SEGMENTS, _HL7ISH), max_size=12).map("\r".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), chunk=st.integers(min_value=1, max_value=80))
def test_arbitrary_bytes_never_crash_the_reader(data: bytes, chunk: int) -> None:
    assert_accounted(messages(data, chunk))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_STREAMS, chunk=st.integers(min_value=1, max_value=50))
def test_hl7ish_streams_end_in_records_or_one_rejection(text: str, chunk: int) -> None:
    data = text.encode("utf-8", "surrogatepass")
    result = messages(data, chunk)
    assert_accounted(result)
    whole = messages(data)
    assert [_outcome(m) for m in result] == [_outcome(m) for m in whole]  # chunks never matter


_FIELDS = [
    ("MSH", 7),
    ("MSH", 9),
    ("MSH", 10),
    ("PID", 3),
    ("PID", 5),
    ("PID", 7),
    ("PID", 8),
    ("PID", 11),
    ("PID", 13),
    ("PV1", 2),
    ("PV1", 44),
    ("PV1", 45),
    ("OBX", 2),
    ("OBX", 5),
    ("OBX", 14),
]


@settings(max_examples=200, deadline=None)
@given(
    targets=st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=4),
    shape=st.sampled_from(["{c}", "{c}^{c}", "{c}~x", "2024{c}", "{c}&{c}", "\\F\\{c}", "1{c}"]),
    kind=st.sampled_from(["ADT^A01", "ADT^A08", "ORU^R01", "SIU^S12", "VXU^V04", "ADT^A40"]),
)
def test_rejections_never_quote_a_value(targets: list, shape: str, kind: str) -> None:
    canary = shape.format(c=CANARY)
    segments = {
        "MSH": ["MSH", "^~\\&", "A", "B", "C", "D", "20240101", "", kind, "X1", "P", "2.5.1"],
        "PID": ["PID", "1", "", "1^^^H^MR", "", "DOE^J", "", "19800101", "F"],
        "PV1": ["PV1", "1", "I"],
        "SCH": ["SCH", "S1"],
        "MRG": ["MRG", "2^^^H^MR"],
        "OBX": ["OBX", "1", "NM", "1-1^X^LN", "", "5"],
        "RXA": ["RXA", "0", "1", "20240101", "", "1^X^CVX"],
    }
    for name, index in targets:
        fields = segments[name]
        # In the MSH list, item n is MSH-(n+1): MSH-1 is the separator itself.
        slot = index - 1 if name == "MSH" else index
        while len(fields) <= slot:
            fields.append("")
        fields[slot] = canary
    text = "\r".join(
        "|".join(fields) if name != "MSH" else "MSH|" + "|".join(fields[1:])
        for name, fields in segments.items()
    )
    result = messages(text.encode())
    assert_accounted(result)
    for message in result:
        if message.rejection is not None:
            assert CANARY not in message.rejection.message


_TEMPLATES = [
    adt(kind="ADT^A01^ADT_A01")
    + "|||||||||||||||||||||||||||||||||||||||||20240105120000|20240106120000"
    + "\rOBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F|||20240105121500",
    "\r".join(
        [
            "MSH|^~\\&|LAB|H|HUB|A|20240101120000||ORU^R01^ORU_R01|L1|P|2.5.1",
            "PID|1||77^^^LAB^MR||DOE^JOHN||19700101|M",
            "OBR|1|||GLU^Glucose^L|||20240101083000+0100",
            "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^^UCUM|||||F",
            "OBX|2|SN|2345-7^Glucose^LN||=^5.4|mmol/L^^UCUM|||||F",
        ]
    ),
    "\r".join(
        [
            "MSH|^~\\&|SCH|H|HUB|A|20240101120000||SIU^S12^SIU_S12|S1|P|2.5.1",
            "SCH|P1|F1|||||||||^^^20240101120000+0000^20240101130000",
            "PID|1||77^^^LAB^MR||DOE^JOHN||19700101|M",
            "RGS|1",
            "AIS|1||SVC^Service|20240101120000",
        ]
    ),
    "\r".join(
        [
            "MSH|^~\\&|IIS|H|HUB|A|20240101||VXU^V04^VXU_V04|V1|P|2.5.1",
            "PID|1||55^^^IIS^MR||DOE^KID||20200101|F",
            "ORC|RE||IZ-9",
            "RXA|0|1|20240102||115^Tdap^CVX|0.5|mL||00||||||||||CP|A",
        ]
    ),
    "\r".join(
        [
            "MSH|^~\\&|REG|H|HUB|A|20240101||ADT^A40^ADT_A39|M1|P|2.5.1",
            "EVN|A40|20240101",
            "PID|1||100^^^H^MR~7^^^H^PI",
            "MRG|90^^^H^MR",
        ]
    ),
]
# Field values built from pieces that stress the parser: escape sequences (valid, empty,
# unterminated, bad hex), delimiters, the HL7 null, blanks, date/offset fragments.
_PIECES = st.sampled_from(
    [
        *("\\\\", "\\X\\", "\\X41\\", "\\XZ\\", "\\F\\", "\\S\\", "\\", "^", "~", "&"),
        *('""', " ", "\t", "20240101", "1230", "+0500", "-", ".", "MR", "NM", "Internet", "@"),
        "é",
    ]
)
_VALUE = st.lists(
    st.one_of(_PIECES, st.text(alphabet="QX0123456789.+- ", max_size=4)), max_size=5
).map("".join)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_supported_messages_stay_accounted_and_match_hl7apy(data: st.DataObject) -> None:
    segments = [line.split("|") for line in data.draw(st.sampled_from(_TEMPLATES)).split("\r")]
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        fields = segments[data.draw(st.integers(min_value=0, max_value=len(segments) - 1))]
        first = 2 if fields[0] == "MSH" else 1  # keep MSH-1/MSH-2 (list items 0 and 1)
        index = data.draw(st.integers(min_value=first, max_value=len(fields) + 1))
        while len(fields) <= index:
            fields.append("")
        fields[index] = data.draw(st.one_of(_VALUE, _VALUE.map(lambda v: CANARY + v)))
    text = "\r".join("|".join(fields) for fields in segments)
    result = messages(text.encode(), data.draw(st.sampled_from([None, 3])))
    assert_accounted(result)
    assert len(result) == 1
    if result[0].rejection is not None:
        assert CANARY not in result[0].rejection.message
    try:
        reference = parse_reference(text)
    except Exception:  # hl7apy refuses some mutations outright; nothing to compare then
        return

    def outcome(view: Any) -> Any:
        try:
            return [(r.entity, r.fields) for r in map_message(view, "p")]
        except Hl7Error as err:
            return (err.reason, err.text)

    try:
        expected = outcome(reference)
    except Unreadable:  # a mutation moved a read field where hl7apy keeps no position
        return
    assert outcome(fastparse.parse(text)) == expected


def test_benchmark_corpus_loads_completely() -> None:
    rate, records = bench_fast(corpus(300))
    assert records == 600 and rate > 0

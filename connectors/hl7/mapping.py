"""Map one parsed HL7 v2 message (any MessageView) to canonical SourceRecords, or raise Hl7Error.

What a supported message yields, in this order:

* ADT A01/A03/A04/A08: patient (PID), encounter (PV1, when present), one observation per OBX.
* ADT A28/A31: patient, one observation per OBX. These are person-level events; their PV1 is
  a placeholder by the standard, so no encounter is emitted.
* ADT A40: for each PID/MRG pair, the surviving patient and one ``merge`` record
  (subject_system, subject_id = survivor, prior_subject_id = MRG-1).
* ORU R01: patient, one observation per OBX.
* SIU S12/S13/S14/S15/S26: patient, one appointment (SCH), one observation per OBX.
* VXU V04: patient, one immunization per RXA, one observation per OBX.

Any other MSH-9 type raises HL7_UNSUPPORTED_TYPE. Every error names fields, never values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from connectors.hl7.errors import Hl7Error
from connectors.hl7.values import parse_date, parse_dtm, parse_nm
from connectors.hl7.view import MessageView, SegmentView
from domain.records import SourceRecord

SUBJECT_SYSTEM = "mrn"

_SEX = {"F": "female", "M": "male", "O": "other", "U": "unknown", "A": "other", "N": "unknown"}
# HL7 table 0396 coding-system ids -> the hub's code_system names; others pass through as sent.
_CODE_SYSTEMS = {
    "LN": "loinc",
    "SCT": "snomed",
    "SNM": "snomed",
    "I10": "icd10",
    "ICD10": "icd10",
    "C4": "cpt",
    "CPT": "cpt",
    "CVX": "cvx",
    "NDC": "ndc",
    "RXNORM": "rxnorm",
}
# OBX-11 (table 0085) -> FHIR Observation.status.
_OBX_STATUS = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "S": "preliminary",
    "R": "registered",
    "I": "registered",
    "X": "cancelled",
    "D": "cancelled",
    "W": "entered-in-error",
}
# PV1-2 (table 0004) -> v3 ActEncounterCode (FHIR Encounter.class); others pass through.
_PATIENT_CLASS = {"E": "EMER", "I": "IMP", "O": "AMB", "P": "PRENC"}
_ENCOUNTER_STATUS = {"A01": "in-progress", "A03": "finished", "A04": "arrived"}
_ENCOUNTER_TRIGGERS = frozenset(("A01", "A03", "A04", "A08"))  # visit events; A08 updates one
_APPOINTMENT_STATUS = {
    "S12": "booked",
    "S13": "booked",  # rescheduled: still booked, at the new time
    "S14": "modified",  # as specified for the hub; FHIR itself would keep "booked"
    "S15": "cancelled",
    "S26": "noshow",
}
_EMAIL_KINDS = frozenset(("INTERNET", "NET"))  # XTN-3 telecommunication equipment type
# PID fields read as a single value: birth date, sex, race, language, SSN, ethnicity, deceased.
_PID_SINGLES = (7, 8, 10, 15, 19, 22, 30)
# Observation value types whose OBX-5 is a short code rather than free text (free text can
# hold anything, including other people's names, so it is never copied).
_CODED_TYPES = frozenset(("CE", "CWE", "CNE", "CF", "ID", "IS"))
_MAX_VALUE_TEXT = 64


class _Context(NamedTuple):
    """What every record of one message shares."""

    position: str
    control_id: str
    trigger: str
    effective_at: datetime


class Header(NamedTuple):
    """What the reader needs from MSH before mapping: type, trigger and control id."""

    code: str  # MSH-9.1, upper case, e.g. "ADT"
    trigger: str  # MSH-9.2, upper case, e.g. "A04"
    control_id: str  # MSH-10
    sent: str  # MSH-7, unparsed


def read_header(view: MessageView) -> Header:
    """MSH-9, MSH-10 and MSH-7; the message type comes from MSH-9, never from a file name."""
    msh = view.first("MSH")
    if msh is None:
        raise Hl7Error("HL7_MISSING_MSH", "MSH", "message has no MSH segment")
    code, trigger = msh.comps(9, 1, 2)
    control_id, sent = msh.values((10, 7))
    return Header(code.upper(), trigger.upper(), control_id, sent)


def _opt(value: str) -> str | None:
    return value or None


def _identifier(seg: SegmentView, field: int) -> tuple[str, str] | None:
    """(authority, id) from a CX list: the repetition typed MR (CX-5), else the first one."""
    first: tuple[str, str] | None = None
    for rep in range(1, seg.reps(field) + 1):
        ident, _check, _scheme, authority, id_type = seg.comps(field, rep, 5)
        if not ident:
            continue
        if id_type.upper() == "MR":
            return authority, ident
        if first is None:
            first = (authority, ident)
    return first


def _coding(seg: SegmentView, field: int, prefer: str) -> tuple[str | None, ...]:
    """(code, display, system) from a CE/CWE, preferring whichever triplet uses `prefer`."""
    c = seg.comps(field, 1, 6)
    code, display, system = c[0], c[1], c[2]
    if system.upper() != prefer and ((c[3] and c[5].upper() == prefer) or not code):
        code, display, system = c[3], c[4], c[5]
    return _opt(code), _opt(display), _CODE_SYSTEMS.get(system.upper(), system) or None


def _dtm(seg: SegmentView | None, field: int, label: str, comp: int = 1) -> datetime | None:
    if seg is None:
        return None
    value = seg.get(field, comp)
    return parse_dtm(value, label) if value else None


def _street(pid: SegmentView, street: str, other: str) -> str | None:
    """PID-11.1 (+ .2): XAD-1 is an SAD, which some senders split into number & street name."""
    street_name = pid.get(11, 1, 2)
    if street_name and street_name not in street:
        street = f"{street} {street_name}" if street else street_name
    if other:
        street = f"{street}, {other}" if street else other
    return street or None


def _telecom(pid: SegmentView) -> tuple[str | None, str | None]:
    """(phone, email) from PID-13: the first e-mail and the first phone number."""
    phone = email = None
    for rep in range(1, pid.reps(13) + 1):
        number, _use, kind, address, _country, area, local = pid.comps(13, rep, 7)
        if address and ("@" in address or kind.upper() in _EMAIL_KINDS):
            if email is None:
                email = address
        elif phone is None:
            phone = number or (area + local if local else None)
    return phone, email


def _patient(pid: SegmentView, ctx: _Context, where: str) -> SourceRecord:
    found = _identifier(pid, 3)
    if found is None:
        raise Hl7Error("HL7_MISSING_PID", "PID-3", "no patient identifier")
    authority, mrn = found
    subject_id = f"{authority}|{mrn}"
    family, given = pid.comps(5, 1, 2)
    birth, sex_code, race, language, ssn, ethnicity, deceased_flag = pid.values(_PID_SINGLES)
    sex = None
    if sex_code:
        sex = _SEX.get(sex_code.upper())
        if sex is None:
            raise Hl7Error("BAD_VALUE", "PID-8", "administrative sex not in HL7 table 0001")
    deceased_flag = deceased_flag.upper()
    phone, email = _telecom(pid)
    street, other, city, state, postal, country = pid.comps(11, 1, 6)
    fields: dict[str, Any] = {
        "subject_system": SUBJECT_SYSTEM,
        "subject_id": subject_id,
        "source_id": subject_id,
        "mrn": mrn,
        "mrn_authority": authority or None,
        "ssn": ssn or None,
        "given_name": given or None,
        "family_name": family or None,
        "birth_date": parse_date(birth, "PID-7") if birth else None,
        "sex": sex,
        "email": email,
        "phone": phone,
        "address_line": _street(pid, street, other),
        "city": city or None,
        "state": state or None,
        "postal_code": postal or None,
        "country": country or None,
        "language": language or None,
        "race": race or None,
        "ethnicity": ethnicity or None,
        "deceased": True if deceased_flag == "Y" else False if deceased_flag == "N" else None,
        "effective_at": ctx.effective_at,
    }
    return SourceRecord("patient", f"{ctx.position} {where}", fields)


def _subject(patient: SourceRecord) -> dict[str, Any]:
    return {"subject_system": SUBJECT_SYSTEM, "subject_id": patient.fields["subject_id"]}


def _merge(pid: SegmentView, mrg: SegmentView, ctx: _Context, where: str) -> list[SourceRecord]:
    survivor = _patient(pid, ctx, f"PID{where}")
    prior = _identifier(mrg, 1)
    if prior is None:
        raise Hl7Error("MISSING_FIELD", "MRG-1", "no prior patient identifier")
    merge = SourceRecord(
        entity="merge",
        position=f"{ctx.position} MRG{where}",
        fields={
            **_subject(survivor),
            "source_id": f"{ctx.control_id}:MRG{where.replace(' #', ':')}",
            "prior_subject_id": f"{prior[0]}|{prior[1]}",
            "effective_at": ctx.effective_at,
        },
    )
    return [survivor, merge]


def _encounter(pv1: SegmentView, subject_id: str, ctx: _Context) -> SourceRecord:
    patient_class, type_code, visit, admitted, discharged = pv1.values((2, 4, 19, 44, 45))
    end_at = parse_dtm(discharged, "PV1-45") if discharged else None
    status = _ENCOUNTER_STATUS.get(ctx.trigger)
    if status is None:  # A08 update: the discharge time is the only hint of the state
        status = "finished" if end_at is not None else "in-progress"
    return SourceRecord(
        entity="encounter",
        position=f"{ctx.position} PV1",
        fields={
            "subject_system": SUBJECT_SYSTEM,
            "subject_id": subject_id,
            "source_id": visit or f"{ctx.control_id}:PV1",
            "status": status,
            "class_code": _PATIENT_CLASS.get(patient_class.upper(), patient_class) or None,
            "type_code": type_code or None,
            "type_system": "hl7v2-0007" if type_code else None,
            "start_at": parse_dtm(admitted, "PV1-44") if admitted else None,
            "end_at": end_at,
            "effective_at": ctx.effective_at,
        },
    )


def _appointment(view: MessageView, subject: dict[str, Any], ctx: _Context) -> SourceRecord:
    sch = view.first("SCH")
    if sch is None:
        raise Hl7Error("MISSING_FIELD", "SCH", "SIU message without an SCH segment")
    source_id = sch.get(1) or sch.get(2)
    if not source_id:
        raise Hl7Error("MISSING_FIELD", "SCH-1/SCH-2", "no appointment id")
    ais = view.first("AIS")
    start_at = _dtm(sch, 11, "SCH-11.4", comp=4) or _dtm(ais, 4, "AIS-4")
    return SourceRecord(
        entity="appointment",
        position=f"{ctx.position} SCH",
        fields={
            **subject,
            "source_id": source_id,
            "status": _APPOINTMENT_STATUS[ctx.trigger],
            "service_code": _opt(ais.get(3)) if ais is not None else None,
            "start_at": start_at,
            "end_at": _dtm(sch, 11, "SCH-11.5", comp=5),
            "effective_at": ctx.effective_at,
        },
    )


def _observation(
    obx: SegmentView, obr: SegmentView | None, k: int, subject: dict[str, Any], ctx: _Context
) -> SourceRecord:
    where = f"(OBX #{k})"
    value_type = obx.get(2).upper()
    code, display, system = _coding(obx, 3, "LN")
    value_number = value_text = None
    if value_type == "NM":
        raw = obx.get(5)
        value_number = parse_nm(raw, f"OBX-5 {where}") if raw else None
    elif value_type == "SN":
        comparator, number, separator = obx.comps(5, 1, 3)
        if comparator in ("", "=") and not separator:  # "=^12.5": a plain number, no range
            value_number = parse_nm(number, f"OBX-5 {where}") if number else None
    elif value_type in _CODED_TYPES:
        value_text = obx.get(5, 1) or obx.get(5, 2)
        if len(value_text) > _MAX_VALUE_TEXT:
            value_text = None
    clinical = _dtm(obx, 14, f"OBX-14 {where}") or _dtm(obr, 7, "OBR-7")
    return SourceRecord(
        entity="observation",
        position=f"{ctx.position} OBX #{k}",
        fields={
            **subject,
            "source_id": obx.get(21) or f"{ctx.control_id}:OBX:{k}",
            "status": _OBX_STATUS.get(obx.get(11).upper()),
            "code_system": system,
            "code": code,
            "display": display,
            "value_number": value_number,
            "value_text": value_text or None,
            "unit": obx.get(6, 1) or obx.get(6, 2) or None,
            "effective_at_clinical": clinical,
            "effective_at": ctx.effective_at,
        },
    )


def _immunization(
    rxa: SegmentView, orc: SegmentView | None, k: int, subject: dict[str, Any], ctx: _Context
) -> SourceRecord:
    code, display, system = _coding(rxa, 5, "CVX")
    given = rxa.get(3)
    if not given:
        raise Hl7Error("MISSING_FIELD", f"RXA-3 (RXA #{k})", "no administration date")
    completion = (rxa.get(20) or "CP").upper()
    status = "not-done" if completion in ("RE", "NA") else "completed"
    if rxa.get(21).upper() == "D":
        status = "entered-in-error"
    order_id = (orc.get(3) or orc.get(2)) if orc is not None else ""
    return SourceRecord(
        entity="immunization",
        position=f"{ctx.position} RXA #{k}",
        fields={
            **subject,
            "source_id": order_id or f"{ctx.control_id}:RXA:{k}",
            "status": status,
            "code_system": system,
            "code": code,
            "display": display,
            "occurrence_date": parse_date(given, f"RXA-3 (RXA #{k})"),
            "effective_at": ctx.effective_at,
        },
    )


def _clinical(view: MessageView, subject: dict[str, Any], ctx: _Context) -> list[SourceRecord]:
    """Observations (OBX) and immunizations (RXA) in segment order, each with its context."""
    if view.first("OBX") is None and view.first("RXA") is None:
        return []  # skip the segment walk for the common ADT shape
    out: list[SourceRecord] = []
    obr = orc = None
    n_obx = n_rxa = 0
    for seg in view.segments():
        name = seg.name
        if name == "OBR":
            obr = seg
        elif name == "ORC":
            orc = seg
        elif name == "OBX":
            n_obx += 1
            out.append(_observation(seg, obr, n_obx, subject, ctx))
        elif name == "RXA" and ctx.trigger == "V04":
            n_rxa += 1
            out.append(_immunization(seg, orc, n_rxa, subject, ctx))
    return out


def _single_pid(view: MessageView) -> SegmentView:
    pids = view.all("PID")
    if not pids:
        raise Hl7Error("HL7_MISSING_PID", "PID", "no PID segment")
    if len(pids) > 1:
        raise Hl7Error("HL7_INVALID", "PID", "more than one PID segment in a single-patient type")
    return pids[0]


def _map_adt(view: MessageView, ctx: _Context) -> list[SourceRecord]:
    patient = _patient(_single_pid(view), ctx, "PID")
    out = [patient]
    pv1 = view.first("PV1")
    if pv1 is not None and ctx.trigger in _ENCOUNTER_TRIGGERS:
        out.append(_encounter(pv1, patient.fields["subject_id"], ctx))
    if view.first("OBX") is not None:
        out.extend(_clinical(view, _subject(patient), ctx))
    return out


def _map_merge(view: MessageView, ctx: _Context) -> list[SourceRecord]:
    """A40: the PATIENT group (PID, PD1, MRG, PV1) may repeat; pair each MRG with its PID."""
    pairs: list[list[SegmentView | None]] = []
    for seg in view.segments():
        if seg.name == "PID":
            pairs.append([seg, None])
        elif seg.name == "MRG":
            if not pairs:
                raise Hl7Error("HL7_MISSING_PID", "PID", "MRG segment before any PID")
            if pairs[-1][1] is not None:
                raise Hl7Error("HL7_INVALID", "MRG", "two MRG segments for one PID")
            pairs[-1][1] = seg
    if not pairs:
        raise Hl7Error("HL7_MISSING_PID", "PID", "no PID segment")
    out: list[SourceRecord] = []
    for i, (pid, mrg) in enumerate(pairs, start=1):
        where = f" #{i}" if len(pairs) > 1 else ""
        if mrg is None:
            raise Hl7Error("MISSING_FIELD", f"MRG{where}", "merge without an MRG segment")
        assert pid is not None  # pairs are created from a PID
        out.extend(_merge(pid, mrg, ctx, where))
    return out


def _map_single(view: MessageView, ctx: _Context) -> list[SourceRecord]:
    """ORU, SIU, VXU: one patient plus the message's clinical records."""
    patient = _patient(_single_pid(view), ctx, "PID")
    out = [patient]
    if ctx.trigger in _APPOINTMENT_STATUS:
        out.append(_appointment(view, _subject(patient), ctx))
    out.extend(_clinical(view, _subject(patient), ctx))
    return out


_HANDLERS: dict[tuple[str, str], Callable[[MessageView, _Context], list[SourceRecord]]] = {
    **{("ADT", t): _map_adt for t in ("A01", "A03", "A04", "A08", "A28", "A31")},
    ("ADT", "A40"): _map_merge,
    ("ORU", "R01"): _map_single,
    **{("SIU", t): _map_single for t in _APPOINTMENT_STATUS},
    ("VXU", "V04"): _map_single,
}
SUPPORTED_TYPES: Sequence[str] = tuple(f"{c}^{t}" for c, t in _HANDLERS)


def map_message(
    view: MessageView, position: str, header: Header | None = None
) -> list[SourceRecord]:
    """All records of one message (never empty), or Hl7Error naming the offending field.

    `header` is `read_header(view)` when the caller already has it (saves re-reading MSH).
    """
    header = header or read_header(view)
    if not header.code:
        raise Hl7Error("HL7_INVALID", "MSH-9", "message type is empty")
    handler = _HANDLERS.get((header.code, header.trigger))
    if handler is None:
        raise Hl7Error("HL7_UNSUPPORTED_TYPE", "MSH-9", "message type is not one the hub ingests")
    if not header.control_id:
        raise Hl7Error("MISSING_FIELD", "MSH-10", "no message control id")
    if not header.sent:
        raise Hl7Error("MISSING_FIELD", "MSH-7", "no message date/time")
    ctx = _Context(position, header.control_id, header.trigger, parse_dtm(header.sent, "MSH-7"))
    return handler(view, ctx)

"""Extractors for the clinical resources: one small function per canonical entity.

Each takes the parsed resource, its logical id and the Bundle reference map, and returns the
canonical fields of docs/data-contracts.md, or raises `FieldError`. Checks are limited to the
fields the hub uses: the subject reference, the dates it reads and the code it reports on.
"""

from __future__ import annotations

from typing import Any

from connectors.fhir.values import (
    FieldError,
    RefMap,
    arr,
    base_fields,
    code_fields,
    first_coding,
    obj,
    parse_date,
    parse_datetime,
    patient_ref,
    period_start_end,
    text,
)


def condition(r: dict[str, Any], rid: str | None, refs: RefMap | None) -> dict[str, Any]:
    """Condition -> condition (subject, code, clinical status, onset and recorded dates)."""
    out = base_fields(r, rid)
    out["subject_id"] = patient_ref(r.get("subject"), "subject", refs)
    out.update(code_fields(r.get("code"), "code"))
    status = first_coding(r.get("clinicalStatus"), "clinicalStatus")
    out["clinical_status"] = text(status.get("code"), "clinicalStatus") if status else None
    onset = r.get("onsetDateTime")
    field = "onsetDateTime"
    if onset is None and r.get("onsetPeriod") is not None:
        onset = obj(r["onsetPeriod"], "onsetPeriod").get("start")
        field = "onsetPeriod.start"
    out["onset_date"] = parse_date(onset, field)
    out["recorded_date"] = parse_date(r.get("recordedDate"), "recordedDate")
    return out


def encounter(r: dict[str, Any], rid: str | None, refs: RefMap | None) -> dict[str, Any]:
    """Encounter -> encounter (subject, status, class, first type coding, period)."""
    out = base_fields(r, rid)
    out["subject_id"] = patient_ref(r.get("subject"), "subject", refs)
    out["status"] = text(r.get("status"), "status")
    cls = obj(r.get("class"), "class")
    out["class_code"] = text(cls.get("code"), "class.code") if cls else None
    type_code = type_system = None
    types = arr(r.get("type"), "type")
    if types:
        coding = first_coding(types[0], "type")
        if coding:
            type_code = text(coding.get("code"), "type.coding.code")
            type_system = text(coding.get("system"), "type.coding.system")
    out["type_code"] = type_code
    out["type_system"] = type_system
    out["start_at"], out["end_at"] = period_start_end(r.get("period"), "period")
    return out


def observation(r: dict[str, Any], rid: str | None, refs: RefMap | None) -> dict[str, Any]:
    """Observation -> observation; free-text values (valueString) are deliberately not read."""
    out = base_fields(r, rid)
    out["subject_id"] = patient_ref(r.get("subject"), "subject", refs)
    out["status"] = text(r.get("status"), "status")
    out.update(code_fields(r.get("code"), "code"))
    value_number = value_text = unit = None
    if "valueQuantity" in r:
        q = obj(r["valueQuantity"], "valueQuantity") or {}
        v = q.get("value")
        if v is not None:
            if type(v) not in (int, float):
                raise FieldError("BAD_VALUE", "valueQuantity.value", "is not a number")
            value_number = float(v)
        unit = text(q.get("unit") or q.get("code"), "valueQuantity.unit")
    elif "valueInteger" in r:
        v = r["valueInteger"]
        if type(v) is not int:
            raise FieldError("BAD_VALUE", "valueInteger", "is not an integer")
        value_number = float(v)
    elif "valueCodeableConcept" in r:
        coding = first_coding(r["valueCodeableConcept"], "valueCodeableConcept")
        if coding:
            value_text = text(coding.get("display") or coding.get("code"), "valueCodeableConcept")
    elif "valueBoolean" in r:
        v = r["valueBoolean"]
        if type(v) is not bool:
            raise FieldError("BAD_VALUE", "valueBoolean", "is not a boolean")
        value_text = "true" if v else "false"
    out["value_number"] = value_number
    out["value_text"] = value_text
    out["unit"] = unit
    if "effectiveDateTime" in r:
        when = parse_datetime(r["effectiveDateTime"], "effectiveDateTime")
    elif "effectiveInstant" in r:
        when = parse_datetime(r["effectiveInstant"], "effectiveInstant")
    else:
        when = period_start_end(r.get("effectivePeriod"), "effectivePeriod")[0]
    out["effective_at_clinical"] = when
    return out


def medication_request(r: dict[str, Any], rid: str | None, refs: RefMap | None) -> dict[str, Any]:
    """MedicationRequest -> medication_request; a medicationReference must be `#contained`."""
    out = base_fields(r, rid)
    out["subject_id"] = patient_ref(r.get("subject"), "subject", refs)
    out["status"] = text(r.get("status"), "status")
    concept = r.get("medicationCodeableConcept")
    field = "medicationCodeableConcept"
    if concept is None and r.get("medicationReference") is not None:
        # Only a contained Medication can be resolved without a server round trip.
        target = obj(r["medicationReference"], "medicationReference").get("reference")
        field = "medicationReference"
        if type(target) is str and target.startswith("#"):
            for res in arr(r.get("contained"), "contained"):
                if type(res) is dict and res.get("id") == target[1:]:
                    concept = res.get("code")
                    field = "contained.code"
                    break
    out.update(code_fields(concept, field))
    out["authored_on"] = parse_date(r.get("authoredOn"), "authoredOn")
    return out


def immunization(r: dict[str, Any], rid: str | None, refs: RefMap | None) -> dict[str, Any]:
    """Immunization -> immunization (patient, vaccine code, occurrence date)."""
    out = base_fields(r, rid)
    out["subject_id"] = patient_ref(r.get("patient"), "patient", refs)
    out["status"] = text(r.get("status"), "status")
    out.update(code_fields(r.get("vaccineCode"), "vaccineCode"))
    # occurrenceString is free text ("last spring"): no date, but the record still loads.
    out["occurrence_date"] = parse_date(r.get("occurrenceDateTime"), "occurrenceDateTime")
    return out


def procedure(r: dict[str, Any], rid: str | None, refs: RefMap | None) -> dict[str, Any]:
    """Procedure -> procedure (subject, code, performed date from dateTime or period start)."""
    out = base_fields(r, rid)
    out["subject_id"] = patient_ref(r.get("subject"), "subject", refs)
    out["status"] = text(r.get("status"), "status")
    out.update(code_fields(r.get("code"), "code"))
    if "performedDateTime" in r:
        performed = parse_date(r["performedDateTime"], "performedDateTime")
    else:
        period = obj(r.get("performedPeriod"), "performedPeriod")
        start = period.get("start") if period else None
        performed = parse_date(start, "performedPeriod.start")
        if period:
            parse_date(period.get("end"), "performedPeriod.end")  # checked, not stored
    out["performed_date"] = performed
    return out


def appointment(r: dict[str, Any], rid: str | None, refs: RefMap | None) -> dict[str, Any]:
    """Appointment -> appointment; the subject is the first participant whose actor is a Patient."""
    out = base_fields(r, rid)
    subject = None
    for p in arr(r.get("participant"), "participant"):
        actor = obj(p, "participant") and p.get("actor")
        if type(actor) is dict and _looks_like_patient(actor.get("reference"), refs):
            subject = patient_ref(actor, "participant.actor", refs)
            break
    if subject is None:
        raise FieldError("FHIR_BAD_REFERENCE", "participant.actor", "has no Patient")
    out["subject_id"] = subject
    out["status"] = text(r.get("status"), "status")
    service = None
    types = arr(r.get("serviceType"), "serviceType")
    if types:
        coding = first_coding(types[0], "serviceType")
        service = text(coding.get("code"), "serviceType.coding.code") if coding else None
    out["service_code"] = service
    out["start_at"] = parse_datetime(r.get("start"), "start")
    out["end_at"] = parse_datetime(r.get("end"), "end")
    return out


def _looks_like_patient(target: Any, refs: RefMap | None) -> bool:
    if type(target) is not str:
        return False
    if target.startswith("Patient/") or "/Patient/" in target:
        return True
    return refs is not None and refs.get(target, ("",))[0] == "Patient"

"""Render a Person as FHIR R4 (US Core style) resources, one NDJSON line each.

Lines are built from string templates rather than dicts + a JSON encoder: about four times
faster, and safe because every value is either a JSON fragment made by orjson at import time,
a generated id/date/number, or a pool value that tests prove needs no JSON escaping.
"""

from __future__ import annotations

from typing import Any

import orjson

from synthetic import codes as C
from synthetic import names as N
from synthetic.clock import Clock
from synthetic.people import AUTH_REVOKED, FEMALE, MALE, OTHER, Person

RESOURCE_TYPES = (
    "Patient",
    "Condition",
    "Encounter",
    "Observation",
    "MedicationRequest",
    "Immunization",
    "Procedure",
    "Appointment",
    "Consent",
)


def _j(obj: Any) -> str:
    """A constant as a JSON fragment, made once at import."""
    return orjson.dumps(obj).decode()


def _cc(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        out["text"] = text
    return out


US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
_GENDERS = {FEMALE: "female", MALE: "male", OTHER: "other"}


def _omb(url: str, code: str, display: str) -> str:
    if code == "UNK":
        coding = {
            "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
            "code": "UNK",
            "display": "Unknown",
        }
    else:
        coding = {"system": "urn:oid:2.16.840.1.113883.6.238", "code": code, "display": display}
    return _j(
        {
            "url": US_CORE + url,
            "extension": [
                {"url": "ombCategory", "valueCoding": coding},
                {"url": "text", "valueString": display},
            ],
        }
    )


_RACE_EXT = [_omb("us-core-race", code, display) for code, display, _ in N.RACES]
_ETHNICITY_EXT = [_omb("us-core-ethnicity", code, display) for code, display, _ in N.ETHNICITIES]
_BIRTHSEX_EXT = {
    FEMALE: "," + _j({"url": US_CORE + "us-core-birthsex", "valueCode": "F"}),
    MALE: "," + _j({"url": US_CORE + "us-core-birthsex", "valueCode": "M"}),
}
_COMMUNICATION = [
    _j(
        [
            {
                "language": {
                    "coding": [{"system": "urn:ietf:bcp:47", "code": code, "display": display}],
                    "text": display,
                },
                "preferred": True,
            }
        ]
    )
    for code, display, _ in N.LANGUAGES
]
_META_TAIL = ',"profile":' + _j([US_CORE + "us-core-patient"]) + "}"
_MRN_HEAD = (
    '{"use":"usual","type":'
    + _j(_cc("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number", "MRN"))
    + f',"system":"{C.MRN_SYSTEM}","value":"'
)
_MRN_TAIL = '","assigner":' + _j({"display": C.MRN_AUTHORITY}) + "}"
_SSN_HEAD = (
    ',{"type":'
    + _j(_cc("http://terminology.hl7.org/CodeSystem/v2-0203", "SS", "Social Security number"))
    + f',"system":"{C.SSN_SYSTEM}","value":"'
)

_COND_CODE = [_j(_cc(C.SNOMED, code, display, text)) for code, display, text in C.CONDITIONS]
_COND_FIXED = (
    '"verificationStatus":'
    + _j(
        _cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed")
    )
    + ',"category":'
    + _j(
        [
            _cc(
                "http://terminology.hl7.org/CodeSystem/condition-category",
                "problem-list-item",
                "Problem List Item",
            )
        ]
    )
)
_CLINICAL = {
    True: _j(_cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")),
    False: _j(
        _cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved", "Resolved")
    ),
}
_ENC_CLASS = [
    _j({"system": C.ACT_CODE, "code": code, "display": display})
    for code, display in C.ENCOUNTER_CLASSES
]
_ENC_TYPE = [
    [_j([_cc(C.SNOMED, code, display)]) for code, display in types] for types in C.ENCOUNTER_TYPES
]
_OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
_LAB = _j([_cc(_OBS_CAT, "laboratory", "Laboratory")])
_VITALS = _j([_cc(_OBS_CAT, "vital-signs", "Vital Signs")])
_HBA1C_CODE = _j(_cc(C.LOINC, *C.HBA1C, "HbA1c"))
_BMI_CODE = _j(_cc(C.LOINC, *C.BMI, "BMI"))
_BP_CODE = _j(_cc(C.LOINC, *C.BP_PANEL, "Blood pressure"))
_SYS_CODE = _j(_cc(C.LOINC, *C.BP_SYSTOLIC))
_DIA_CODE = _j(_cc(C.LOINC, *C.BP_DIASTOLIC))
_MED_CODE = [_j(_cc(C.RXNORM, code, display)) for code, display in C.MEDICATIONS]
_VAX_CODE = [_j(_cc(C.CVX, code, display)) for code, display in C.VACCINES]
_PROC_CODE = [_j(_cc(C.SNOMED, code, display)) for code, display in C.PROCEDURES]
_SERVICE = [_j([_cc(C.SERVICE_SYSTEM, code, display)]) for code, display in C.SERVICES]
_APPT_TYPE = _j(
    _cc(
        "http://terminology.hl7.org/CodeSystem/v2-0276",
        "ROUTINE",
        "Routine appointment - default if not valued",
    )
)
_APPT_STATUS = C.APPOINTMENT_STATUSES


def _ucum(unit: str) -> str:
    """The tail of a valueQuantity after its number."""
    return f',"unit":"{unit}","system":"{C.UCUM}","code":"{unit}"}}'


_PCT, _KGM2, _MMHG = _ucum("%"), _ucum("kg/m2"), _ucum("mm[Hg]")

_CONSENT_CATEGORY = _j([_cc(C.LOINC, "59284-0", "Patient Consent")])
_POLICY = "http://terminology.hl7.org/CodeSystem/consentpolicycodes"
_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
_TREATMENT_HEAD = (
    '"status":"active","scope":'
    + _j(_cc(_SCOPE, "treatment", "Treatment"))
    + ',"category":'
    + _CONSENT_CATEGORY
)
_TREATMENT_RULE = ',"policyRule":' + _j(
    _cc(_POLICY, "hipaa-npp", "HIPAA Notice of Privacy Practices")
)
_MARKETING_HEAD = (
    ',"scope":'
    + _j(_cc(_SCOPE, "patient-privacy", "Privacy Consent"))
    + (',"category":' + _CONSENT_CATEGORY)
)
_MARKETING_RULE = ',"policyRule":' + _j(_cc(_POLICY, "hipaa-auth", "HIPAA Authorization"))
_PURPOSE_MARKETING = ',"purpose":' + _j(
    [{"system": C.ACT_REASON, "code": "HMARKT", "display": "healthcare marketing"}]
)
_PURPOSE_TREATMENT = ',"purpose":' + _j(
    [{"system": C.ACT_REASON, "code": "TREAT", "display": "treatment"}]
)


def patient_line(p: Person, clock: Clock) -> str:
    """The Patient resource as one NDJSON line (also the base of the bad-birthDate record)."""
    ssn = f'{_SSN_HEAD}{p.ssn}"}}' if p.ssn else ""
    given = f'"{p.given}","{p.middle}"' if p.middle else f'"{p.given}"'
    email = f',{{"system":"email","value":"{p.email}"}}' if p.email else ""
    use = "mobile" if p.mobile else "home"
    deceased = (
        ""
        if p.deceased is None
        else (',"deceasedBoolean":true' if p.deceased else ',"deceasedBoolean":false')
    )
    a = p.address
    line = f'"{a.line}","{a.line2}"' if a.line2 else f'"{a.line}"'
    return (
        f'{{"resourceType":"Patient","id":"{p.id}","meta":{{"lastUpdated":"'
        f'{clock.iso[p.updated_d]}{clock.t_iso[p.updated_m]}"{_META_TAIL},'
        f'"extension":[{_RACE_EXT[p.race]},{_ETHNICITY_EXT[p.ethnicity]}'
        f"{_BIRTHSEX_EXT.get(p.sex, '')}],"
        f'"identifier":[{_MRN_HEAD}{p.mrn}{_MRN_TAIL}{ssn}],"active":true,'
        f'"name":[{{"use":"official","family":"{p.family}","given":[{given}]}}],'
        f'"telecom":[{{"system":"phone","value":"{p.phone_area}-{p.phone_line}","use":"{use}"}}'
        f'{email}],"gender":"{_GENDERS.get(p.sex, "unknown")}",'
        f'"birthDate":"{clock.iso[p.birth_d]}"{deceased},'
        f'"address":[{{"use":"home","line":[{line}],"city":"{a.city}","state":"{a.state}",'
        f'"postalCode":"{a.postal_code}","country":"US"}}],'
        f'"communication":{_COMMUNICATION[p.language]}}}\n'
    )


def render(p: Person, clock: Clock, out: dict[str, list[str]]) -> None:
    """Append one NDJSON line per resource for person p to out[resource type]."""
    iso, t_iso = clock.iso, clock.t_iso
    pid = p.id
    subject = f'{{"reference":"Patient/{pid}"}}'

    out["Patient"].append(patient_line(p, clock))

    if p.conditions:
        lines = out["Condition"]
        for n, (ci, onset, active) in enumerate(p.conditions):
            day = iso[onset]
            lines.append(
                f'{{"resourceType":"Condition","id":"{pid}-c{n}","clinicalStatus":'
                f'{_CLINICAL[active]},{_COND_FIXED},"code":{_COND_CODE[ci]},'
                f'"subject":{subject},"onsetDateTime":"{day}","recordedDate":"{day}"}}\n'
            )

    if p.encounters:
        lines = out["Encounter"]
        for n, (klass, etype, d, m, end_d, end_m) in enumerate(p.encounters):
            if end_d is None:
                status, end = "in-progress", ""
            else:
                status, end = "finished", f',"end":"{iso[end_d]}{t_iso[end_m]}"'
            lines.append(
                f'{{"resourceType":"Encounter","id":"{pid}-e{n}","status":"{status}",'
                f'"class":{_ENC_CLASS[klass]},"type":{_ENC_TYPE[klass][etype]},'
                f'"subject":{subject},"period":{{"start":"{iso[d]}{t_iso[m]}"{end}}}}}\n'
            )

    lines = out["Observation"]
    for n, (d, m, value) in enumerate(p.hba1c):
        lines.append(
            f'{{"resourceType":"Observation","id":"{pid}-a{n}","status":"final",'
            f'"category":{_LAB},"code":{_HBA1C_CODE},"subject":{subject},'
            f'"effectiveDateTime":"{iso[d]}{t_iso[m]}","valueQuantity":{{"value":{value}{_PCT}}}\n'
        )
    if p.vitals:
        d, m, bmi, systolic, diastolic = p.vitals
        when = iso[d] + t_iso[m]
        lines.append(
            f'{{"resourceType":"Observation","id":"{pid}-bmi","status":"final",'
            f'"category":{_VITALS},"code":{_BMI_CODE},"subject":{subject},'
            f'"effectiveDateTime":"{when}","valueQuantity":{{"value":{bmi}{_KGM2}}}\n'
        )
        lines.append(
            f'{{"resourceType":"Observation","id":"{pid}-bp","status":"final",'
            f'"category":{_VITALS},"code":{_BP_CODE},"subject":{subject},'
            f'"effectiveDateTime":"{when}","component":['
            f'{{"code":{_SYS_CODE},"valueQuantity":{{"value":{systolic}{_MMHG}}},'
            f'{{"code":{_DIA_CODE},"valueQuantity":{{"value":{diastolic}{_MMHG}}}]}}\n'
        )

    if p.meds:
        lines = out["MedicationRequest"]
        for n, (mi, d, status) in enumerate(p.meds):
            lines.append(
                f'{{"resourceType":"MedicationRequest","id":"{pid}-m{n}","status":"{status}",'
                f'"intent":"order","medicationCodeableConcept":{_MED_CODE[mi]},'
                f'"subject":{subject},"authoredOn":"{iso[d]}"}}\n'
            )

    if p.immunizations:
        lines = out["Immunization"]
        for n, (vi, d) in enumerate(p.immunizations):
            lines.append(
                f'{{"resourceType":"Immunization","id":"{pid}-i{n}","status":"completed",'
                f'"vaccineCode":{_VAX_CODE[vi]},"patient":{subject},'
                f'"occurrenceDateTime":"{iso[d]}","primarySource":true}}\n'
            )

    if p.procedures:
        lines = out["Procedure"]
        for n, (pi, d, m) in enumerate(p.procedures):
            lines.append(
                f'{{"resourceType":"Procedure","id":"{pid}-p{n}","status":"completed",'
                f'"code":{_PROC_CODE[pi]},"subject":{subject},'
                f'"performedDateTime":"{iso[d]}{t_iso[m]}"}}\n'
            )

    if p.appointments:
        lines = out["Appointment"]
        for n, (status, d, m, minutes, service, created) in enumerate(p.appointments):
            end = m + minutes  # appointments end the same day (last slot starts 16:15)
            lines.append(
                f'{{"resourceType":"Appointment","id":"{pid}-s{n}",'
                f'"status":"{_APPT_STATUS[status]}","serviceType":{_SERVICE[service]},'
                f'"appointmentType":{_APPT_TYPE},"start":"{iso[d]}{t_iso[m]}",'
                f'"end":"{iso[d]}{t_iso[end]}","minutesDuration":{minutes},'
                f'"created":"{iso[created]}",'
                f'"participant":[{{"actor":{subject},"status":"accepted"}}]}}\n'
            )

    lines = out["Consent"]
    if p.treatment_consent:
        d = p.registered_d
        lines.append(
            f'{{"resourceType":"Consent","id":"{pid}-ct",{_TREATMENT_HEAD},'
            f'"patient":{subject},"dateTime":"{iso[d]}{t_iso[600]}"{_TREATMENT_RULE},'
            f'"provision":{{"type":"permit","period":{{"start":"{iso[d]}"}}'
            f"{_PURPOSE_TREATMENT}}}}}\n"
        )
    if p.fhir_marketing == 1 and p.auth:
        state, signed, expires, _ = p.auth
        # The EHR marks a revoked authorization inactive; an expired one stays "active" and
        # only its period says it no longer applies.
        status = "inactive" if state == AUTH_REVOKED else "active"
        lines.append(
            f'{{"resourceType":"Consent","id":"{pid}-cm","status":"{status}"'
            f'{_MARKETING_HEAD},"patient":{subject},"dateTime":"{iso[signed]}{t_iso[660]}"'
            f'{_MARKETING_RULE},"provision":{{"type":"permit","period":{{"start":'
            f'"{iso[signed]}","end":"{iso[expires]}"}}{_PURPOSE_MARKETING}}}}}\n'
        )
    elif p.fhir_marketing == 2:
        d = min(p.updated_d, p.registered_d)
        lines.append(
            f'{{"resourceType":"Consent","id":"{pid}-cm","status":"active"'
            f'{_MARKETING_HEAD},"patient":{subject},"dateTime":"{iso[d]}{t_iso[700]}"'
            f'{_MARKETING_RULE},"provision":{{"type":"deny","period":{{"start":"{iso[d]}"}}'
            f"{_PURPOSE_MARKETING}}}}}\n"
        )

"""Extractor for FHIR Patient -> the canonical patient entity, identity keys included.

Rules (each picks one value; the first match wins):
- mrn / mrn_authority: the identifier whose type has code `MR` (v2-0203); authority is its
  `system`, else `assigner.display`.
- ssn: the identifier with system `http://hl7.org/fhir/sid/us-ssn` (or type `SS`).
- drivers_license: the identifier with type `DL` (not in the contract table; the protector's
  field policy must treat it as a direct identifier).
- name: `use=official`, else `usual`, else the first name not marked `old`/`maiden`;
  given_name is the first given name (middle names are not identity keys).
- email / phone: the first telecom of that system not marked `use=old`.
- address: `use=home`, else the first not marked `old`; address_line is the first line.
- race / ethnicity: US Core extension, sub-extension `text`, else the first ombCategory display.
- birth_sex: US Core birthsex (F/M/UNK -> female/male/unknown); `sex` is `gender`, falling
  back to birth_sex when gender is absent.
- language: preferred communication (else the first), first coding code.
- deceased: deceasedBoolean, or True when deceasedDateTime is present; None when absent.
"""

from __future__ import annotations

from typing import Any

from connectors.fhir.values import (
    FieldError,
    RefMap,
    arr,
    base_fields,
    obj,
    parse_date,
    parse_datetime,
    text,
)

_SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
_V2_0203 = ("/v2-0203", "/v2/0203")
_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
_BIRTH_SEX = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
_GENDERS = frozenset(("female", "male", "other", "unknown"))
_BIRTH_SEXES = {"F": "female", "M": "male", "UNK": "unknown", "OTH": "other"}


def patient(r: dict[str, Any], rid: str | None, refs: RefMap | None) -> dict[str, Any]:
    """Patient -> patient; subject_id and source_id are the resource id."""
    out = base_fields(r, rid)
    out["subject_id"] = out["source_id"]
    _identifiers(r, out)
    _name(r, out)
    out["birth_date"] = parse_date(r.get("birthDate"), "birthDate")
    _extensions(r, out)
    gender = text(r.get("gender"), "gender")
    if gender is not None and gender not in _GENDERS:
        raise FieldError("BAD_VALUE", "gender", "is not a FHIR administrative gender")
    out["sex"] = gender or out["birth_sex"]
    _telecom(r, out)
    _address(r, out)
    out["language"] = _language(r)
    if "deceasedBoolean" in r:
        dead = r["deceasedBoolean"]
        if type(dead) is not bool:
            raise FieldError("BAD_VALUE", "deceasedBoolean", "is not a boolean")
        out["deceased"] = dead
    elif "deceasedDateTime" in r:
        parse_datetime(r["deceasedDateTime"], "deceasedDateTime")  # checked, not stored
        out["deceased"] = True
    else:
        out["deceased"] = None
    return out


def _has_type(ident: dict[str, Any], code: str) -> bool:
    t = ident.get("type")
    if type(t) is not dict:
        return False
    for coding in arr(t.get("coding"), "identifier.type.coding"):
        if type(coding) is dict and coding.get("code") == code:
            system = coding.get("system")
            # v2-0203 is the R4 URL; older exports (fhiry, Synthea 2.x) use .../fhir/v2/0203.
            if system is None or (type(system) is str and system.endswith(_V2_0203)):
                return True
    return False


def _identifiers(r: dict[str, Any], out: dict[str, Any]) -> None:
    mrn = authority = ssn = dl = None
    for ident in arr(r.get("identifier"), "identifier"):
        if type(ident) is not dict:
            raise FieldError("FHIR_INVALID", "identifier", "is not a JSON object")
        value = text(ident.get("value"), "identifier.value")
        if value is None:
            continue
        system = text(ident.get("system"), "identifier.system")
        if mrn is None and _has_type(ident, "MR"):
            mrn = value
            authority = system
            if authority is None:
                assigner = obj(ident.get("assigner"), "identifier.assigner")
                authority = (
                    text(assigner.get("display"), "identifier.assigner") if assigner else None
                )
        elif ssn is None and (system == _SSN_SYSTEM or _has_type(ident, "SS")):
            ssn = value
        elif dl is None and _has_type(ident, "DL"):
            dl = value
    out["mrn"] = mrn
    out["mrn_authority"] = authority
    out["ssn"] = ssn
    out["drivers_license"] = dl


def _name(r: dict[str, Any], out: dict[str, Any]) -> None:
    names = [n for n in arr(r.get("name"), "name") if type(n) is dict]
    chosen = None
    for use in ("official", "usual"):
        chosen = next((n for n in names if n.get("use") == use), None)
        if chosen is not None:
            break
    if chosen is None:
        chosen = next((n for n in names if n.get("use") not in ("old", "maiden")), None)
    given = family = None
    if chosen is not None:
        family = text(chosen.get("family"), "name.family")
        givens = arr(chosen.get("given"), "name.given")
        given = text(givens[0], "name.given") if givens else None
    out["given_name"] = given
    out["family_name"] = family


def _extensions(r: dict[str, Any], out: dict[str, Any]) -> None:
    race = ethnicity = birth_sex = None
    for ext in arr(r.get("extension"), "extension"):
        if type(ext) is not dict:
            continue
        url = ext.get("url")
        if url == _RACE:
            race = _omb_text(ext, "extension.race")
        elif url == _ETHNICITY:
            ethnicity = _omb_text(ext, "extension.ethnicity")
        elif url == _BIRTH_SEX:
            code = text(ext.get("valueCode"), "extension.birthsex.valueCode")
            if code is not None and code not in _BIRTH_SEXES:
                raise FieldError("BAD_VALUE", "extension.birthsex.valueCode", "is not F/M/UNK")
            birth_sex = _BIRTH_SEXES.get(code) if code else None
    out["race"] = race
    out["ethnicity"] = ethnicity
    out["birth_sex"] = birth_sex


def _omb_text(ext: dict[str, Any], field: str) -> str | None:
    """The `text` sub-extension of a US Core race/ethnicity extension, else ombCategory display."""
    omb = None
    for sub in arr(ext.get("extension"), field + ".extension"):
        if type(sub) is not dict:
            continue
        if sub.get("url") == "text":
            value = text(sub.get("valueString"), field + ".text")
            if value:
                return value
        elif sub.get("url") == "ombCategory" and omb is None:
            coding = obj(sub.get("valueCoding"), field + ".ombCategory")
            omb = text(coding.get("display"), field + ".ombCategory.display") if coding else None
    return omb


def _telecom(r: dict[str, Any], out: dict[str, Any]) -> None:
    email = phone = None
    for t in arr(r.get("telecom"), "telecom"):
        if type(t) is not dict or t.get("use") == "old":
            continue
        system = t.get("system")
        if system == "email" and email is None:
            email = text(t.get("value"), "telecom.value")
        elif system in ("phone", "sms") and phone is None:
            phone = text(t.get("value"), "telecom.value")
    out["email"] = email
    out["phone"] = phone


def _address(r: dict[str, Any], out: dict[str, Any]) -> None:
    addresses = [a for a in arr(r.get("address"), "address") if type(a) is dict]
    chosen = next((a for a in addresses if a.get("use") == "home"), None)
    if chosen is None:
        chosen = next((a for a in addresses if a.get("use") != "old"), None)
    a = chosen or {}
    lines = arr(a.get("line"), "address.line")
    out["address_line"] = text(lines[0], "address.line") if lines else None
    out["city"] = text(a.get("city"), "address.city")
    out["state"] = text(a.get("state"), "address.state")
    out["postal_code"] = text(a.get("postalCode"), "address.postalCode")
    out["country"] = text(a.get("country"), "address.country")


def _language(r: dict[str, Any]) -> str | None:
    comms = [c for c in arr(r.get("communication"), "communication") if type(c) is dict]
    chosen = next((c for c in comms if c.get("preferred") is True), comms[0] if comms else None)
    if chosen is None:
        return None
    lang = obj(chosen.get("language"), "communication.language")
    if lang is None:
        return None
    for coding in arr(lang.get("coding"), "communication.language.coding"):
        if type(coding) is dict and coding.get("code"):
            return text(coding["code"], "communication.language.coding.code")
    return None

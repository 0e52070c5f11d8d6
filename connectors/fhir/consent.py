"""Extractor for FHIR R4 Consent -> the canonical consent entity, with its R4 rule set.

Version rules (FHIR_WRONG_VERSION), checked first, naming the offending element:
1. STU3-only top-level elements are present: period, consentingParty, actor, action,
   securityLabel, purpose, dataPeriod, data, except, sourceIdentifier (R4 moved most of them
   into `provision`); or `policyRule` is a string (a STU3 uri, an R4 CodeableConcept).
2. R5-only top-level elements are present: subject, decision, grantor, grantee, manager,
   controller, date, regulatoryBasis, policyBasis, policyText.
3. `scope` (an object) or `category` (a non-empty array) is missing: both are required in R4
   and neither exists in that form in STU3/R5; `patient` present but not an object.

Content rules:
4. status is required (MISSING_FIELD) and must be an R4 Consent status (BAD_VALUE).
5. `patient` must reference a Patient (FHIR_BAD_REFERENCE).
6. purpose: the first recognised coding in `provision.purpose`, then in nested provisions
   (depth first), then in `category`; codes per docs/data-contracts.md. None recognised ->
   BAD_VALUE naming `provision.purpose` (a consent the hub cannot attach to a purpose cannot
   authorise anything, so it is quarantined rather than loaded with purpose=None).
7. decision: `type` of the provision the purpose came from, else of its nearest ancestor, else
   the policyRule baseline (OPTIN/OPTINR -> permit, OPTOUT/OPTOUTE -> deny); none -> BAD_VALUE
   naming `provision.type`.
8. period_start/period_end: `period` of that provision or its nearest ancestor, as dates;
   recorded_at: `dateTime`.
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
    patient_ref,
    text,
)

_STU3_ONLY = (
    "period",
    "consentingParty",
    "actor",
    "action",
    "securityLabel",
    "purpose",
    "dataPeriod",
    "data",
    "except",
    "sourceIdentifier",
)
_R5_ONLY = (
    "subject",
    "decision",
    "grantor",
    "grantee",
    "manager",
    "controller",
    "date",
    "regulatoryBasis",
    "policyBasis",
    "policyText",
)
_STATUSES = frozenset(("draft", "proposed", "active", "rejected", "inactive", "entered-in-error"))

_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_HUB_PURPOSE = "https://audience-hub.dev/fhir/CodeSystem/purpose"
PURPOSES: dict[tuple[str, str], str] = {
    (_ACT_REASON, "TREAT"): "treatment",
    (_ACT_REASON, "HMARKT"): "marketing",
    (_ACT_REASON, "HPAYMT"): "plan_benefits",
    (_ACT_REASON, "COVERAGE"): "plan_benefits",
    (_HUB_PURPOSE, "treatment"): "treatment",
    (_HUB_PURPOSE, "marketing"): "marketing",
    (_HUB_PURPOSE, "fundraising"): "fundraising",
    (_HUB_PURPOSE, "plan_benefits"): "plan_benefits",
}
_POLICY_BASELINE = {"OPTIN": "permit", "OPTINR": "permit", "OPTOUT": "deny", "OPTOUTE": "deny"}


def check_r4_shape(r: dict[str, Any]) -> None:
    """Rules 1-3: raise FHIR_WRONG_VERSION when the Consent is not R4-shaped."""
    for name in _STU3_ONLY:
        if name in r:
            raise FieldError("FHIR_WRONG_VERSION", name, "is an STU3 Consent element")
    if type(r.get("policyRule")) is str:
        raise FieldError(
            "FHIR_WRONG_VERSION", "policyRule", "is a uri (STU3), not a CodeableConcept"
        )
    for name in _R5_ONLY:
        if name in r:
            raise FieldError("FHIR_WRONG_VERSION", name, "is an R5 Consent element")
    if type(r.get("scope")) is not dict:
        raise FieldError("FHIR_WRONG_VERSION", "scope", "is missing (required in R4)")
    category = r.get("category")
    if type(category) is not list or not category:
        raise FieldError("FHIR_WRONG_VERSION", "category", "is missing (required in R4)")
    if "patient" in r and type(r["patient"]) is not dict:
        raise FieldError("FHIR_WRONG_VERSION", "patient", "is not a Reference object")


def consent(r: dict[str, Any], rid: str | None, refs: RefMap | None) -> dict[str, Any]:
    """Consent -> consent (purpose, decision, period) following the module's rule set."""
    check_r4_shape(r)
    out = base_fields(r, rid)
    status = text(r.get("status"), "status")
    if status is None:
        raise FieldError("MISSING_FIELD", "status", "is missing")
    if status not in _STATUSES:
        raise FieldError("BAD_VALUE", "status", "is not an R4 Consent status")
    out["status"] = status
    out["subject_id"] = patient_ref(r.get("patient"), "patient", refs)

    top = obj(r.get("provision"), "provision")
    found = _find_purpose(top, []) if top else None
    if found is not None:
        purpose, chain = found
    else:
        purpose = _purpose_of(r.get("category"), "category")
        chain = [top] if top else []
    if purpose is None:
        raise FieldError("BAD_VALUE", "provision.purpose", "has no recognised purpose code")
    out["purpose"] = purpose

    decision = None
    for prov in reversed(chain):
        decision = text(prov.get("type"), "provision.type")
        if decision is not None:
            break
    if decision is None:
        decision = _policy_baseline(r.get("policyRule"))
    if decision not in ("permit", "deny"):
        raise FieldError("BAD_VALUE", "provision.type", "is not permit or deny")
    out["decision"] = decision

    start = end = None
    for prov in reversed(chain):
        period = obj(prov.get("period"), "provision.period")
        if period is not None:
            start = parse_date(period.get("start"), "provision.period.start")
            end = parse_date(period.get("end"), "provision.period.end")
            break
    out["period_start"] = start
    out["period_end"] = end
    out["recorded_at"] = parse_datetime(r.get("dateTime"), "dateTime")
    return out


def _find_purpose(
    prov: dict[str, Any], parents: list[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]] | None:
    """Depth-first: the first provision with a recognised purpose and its ancestor chain."""
    chain = [*parents, prov]
    for coding in arr(prov.get("purpose"), "provision.purpose"):
        mapped = _map_coding(coding)
        if mapped:
            return mapped, chain
    for child in arr(prov.get("provision"), "provision.provision"):
        found = _find_purpose(obj(child, "provision.provision") or {}, chain)
        if found is not None:
            return found
    return None


def _purpose_of(concepts: Any, field: str) -> str | None:
    for concept in arr(concepts, field):
        cc = obj(concept, field)
        for coding in arr(cc.get("coding") if cc else None, field + ".coding"):
            mapped = _map_coding(coding)
            if mapped:
                return mapped
    return None


def _map_coding(coding: Any) -> str | None:
    if type(coding) is not dict:
        return None
    system, code = coding.get("system"), coding.get("code")
    if type(system) is not str or type(code) is not str:
        return None
    return PURPOSES.get((system, code))


def _policy_baseline(rule: Any) -> str | None:
    if type(rule) is not dict:
        return None
    for coding in arr(rule.get("coding"), "policyRule.coding"):
        if type(coding) is dict and coding.get("code") in _POLICY_BASELINE:
            return _POLICY_BASELINE[coding["code"]]
    return None

"""The one catalogue of reason codes: quarantine, sync errors, engine errors.

Codes are stable identifiers shown to operators and stored in the warehouse; the text says
what happened and what to do, and never carries a value from a record.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # Any source
    "BAD_ENCODING": "The record is not valid text in the declared encoding; re-export as UTF-8.",
    "NOT_JSON": "The line is not valid JSON.",
    "MISSING_FIELD": "A field the hub needs is missing or empty.",
    "BAD_DATE": "A date or timestamp field does not parse.",
    "BAD_VALUE": "A field holds a value outside its allowed set or type.",
    "RECORD_TOO_LARGE": "The record exceeds the size limit.",
    # FHIR
    "FHIR_NOT_A_RESOURCE": "The JSON has no resourceType: it is not a FHIR resource.",
    "FHIR_WRONG_VERSION": "The resource is not FHIR R4 (for example an STU3-shaped resource).",
    "FHIR_UNSUPPORTED_TYPE": "The resource type is not one the hub ingests.",
    "FHIR_INVALID": "The resource fails FHIR R4 validation.",
    "FHIR_BAD_REFERENCE": "A subject/patient reference is missing or does not point to a Patient.",
    # HL7 v2
    "HL7_MISSING_MSH": "The message does not start with an MSH segment.",
    "HL7_BAD_DELIMITERS": "MSH-1/MSH-2 do not declare usable delimiters.",
    "HL7_UNSUPPORTED_TYPE": "The message type in MSH-9 is not one the hub ingests.",
    "HL7_MISSING_PID": "The message has no PID segment or no patient identifier in PID-3.",
    "HL7_INVALID": "The message fails structural validation.",
    # CRM / CDP
    "CRM_MISSING_KEY": "The row has no contact id.",
    "CRM_BAD_DATE": "A date column does not parse with the mapping's format.",
    "CRM_BAD_BOOLEAN": "A boolean column holds a value that is not yes/no/true/false/1/0.",
    "CRM_BAD_EMAIL": "The email column does not hold a syntactically valid address.",
    "CRM_RAGGED_ROW": "The row has a different number of columns than the header.",
    # Activation / engine
    "CONSENT_MISSING": "No valid authorization for the audience's purpose on the send day.",
    "ENGINE_REJECTED": "The engine rejected the member.",
    "ENGINE_RATE_LIMITED": "The engine asked to slow down (429); retried with backoff.",
    "ENGINE_UNAVAILABLE": "The engine did not answer or answered 5xx; retried, then deferred.",
    "ENGINE_TLS_FAILED": "The engine's TLS certificate was not trusted; check the CA file.",
    "ENGINE_AUTH_FAILED": "The engine refused the token or signature (401/403); check the "
    "credentials and the host clock.",
    "ENGINE_IDEMPOTENCY_CONFLICT": "An idempotency key was reused for a different request "
    "(409); a bug in the caller, not retried.",
    "ENGINE_BATCH_TOO_LARGE": "More entries than the engine accepts per request (413); split "
    "the batch.",
    "ENGINE_BAD_REQUEST": "The engine refused the request as invalid (4xx), for example an "
    "unknown audience.",
    "ENGINE_BAD_RESPONSE": "The engine's answer does not follow the API contract.",
    "VAULT_MISSING_CONTACT": "The vault holds no email address for the person.",
}


def describe(code: str) -> str:
    """The operator-facing text for a reason code."""
    return REASONS[code]

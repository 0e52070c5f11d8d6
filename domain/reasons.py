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
    # FHIR Bulk Data client ($export): errors of the export job, never of a record
    "FHIR_BULK_AUTH_FAILED": "The FHIR server refused the client assertion or the access "
    "token (400/401/403); check the client id, the registered key (kid) and the host clock.",
    "FHIR_BULK_REQUEST_REFUSED": "The FHIR server refused the export request (4xx), for "
    "example an unknown group or resource type; see the OperationOutcome issue code.",
    "FHIR_BULK_EXPORT_FAILED": "The FHIR server reported that the export job failed; see the "
    "OperationOutcome issue code, then kick off a new export.",
    "FHIR_BULK_RATE_LIMITED": "The FHIR server kept answering 429 past the retry limit; "
    "retry later.",
    "FHIR_BULK_UNAVAILABLE": "The FHIR server did not answer or answered 5xx past the retry "
    "limit; retry later.",
    "FHIR_BULK_TLS_FAILED": "The FHIR server's TLS certificate was not trusted; check CA file.",
    "FHIR_BULK_BAD_RESPONSE": "The FHIR server's answer does not follow the Bulk Data "
    "specification (no Content-Location, malformed manifest, insecure file URL).",
    "FHIR_BULK_TIMEOUT": "The export did not complete within the allowed time; poll its "
    "status URL again later or kick off a new export.",
    # HL7 v2
    "HL7_MISSING_MSH": "The message does not start with an MSH segment.",
    "HL7_BAD_DELIMITERS": "MSH-1/MSH-2 do not declare usable delimiters.",
    "HL7_UNSUPPORTED_TYPE": "The message type in MSH-9 is not one the hub ingests.",
    "HL7_MISSING_PID": "The message has no PID segment or no patient identifier in PID-3.",
    "HL7_INVALID": "The message fails structural validation.",
    "HL7_SPOOL_FAILED": "The MLLP listener could not store the message durably; no ACK was "
    "sent, so the sender retries. Check the spool folder's disk and permissions.",
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
    # Sync policy, SMTP relay, file exchange and event intake (issue 6)
    "SYNC_DLP_REFUSED": "The member's payload carried an undeclared field or a value that "
    "looks like an identifier its field may not hold; the row was not pushed. Fix the source "
    "value or the segment's personalization fields.",
    "SYNC_APPROVAL_REQUIRED": "A marketing audience needs a recorded review (`hub approve`) "
    "before it is sent to a destination, and again after its definition, purpose or fields "
    "change; only removals were pushed.",
    "SYNC_ALREADY_RUNNING": "Another sync of the same audience to the same destination is "
    "running; this run stopped before doing anything. Wait for it, or check for a stuck job.",
    "SYNC_FAILED": "The sync stopped on an unexpected error; pushed batches are on the ledger "
    "and the next run settles the rest. Re-run with HUB_DEBUG=1 for details.",
    "SMTP_TLS_REQUIRED": "The SMTP relay offered no STARTTLS or its certificate was not "
    "trusted; nothing was sent in plaintext. Fix the relay's TLS or the CA file.",
    "SMTP_AUTH_FAILED": "The SMTP relay refused the credentials; check the user and password.",
    "SMTP_REJECTED": "The SMTP relay refused the sender, recipient or message.",
    "SMTP_UNAVAILABLE": "The SMTP relay did not answer or answered 4xx; retried, then deferred.",
    "FILE_DECRYPT_FAILED": "An exchange file failed authentication (wrong key or tampered); "
    "nothing from it was read.",
    "EVENT_UNMAPPED": "An engine event names no external id (person token); it was counted and "
    "dropped, since events are never keyed on email.",
    "WEBHOOK_BAD_SIGNATURE": "A webhook's signature is missing or does not match its body; "
    "it was refused. Check the shared secret or public key.",
    "WEBHOOK_STALE": "A webhook's timestamp is outside the accepted window (a replay or a "
    "skewed clock); it was refused.",
    "WEBHOOK_REPLAYED": "A webhook delivery was presented a second time with the same "
    "signature; it was refused.",
    "WEBHOOK_BAD_PAYLOAD": "A webhook body is not a batch of events in a known shape.",
}


def describe(code: str) -> str:
    """The operator-facing text for a reason code."""
    return REASONS[code]


def catalogue_markdown() -> str:
    """The catalogue as Markdown (docs/reason-codes.md is this output; a test keeps it so)."""
    lines = [
        "# Reason codes",
        "",
        "Every quarantined record, rejected sync row and engine error carries one of these",
        "codes. The text says what happened and what to do; no code ever carries a value from",
        "a record. Generated by `python -m domain.reasons`.",
        "",
        "| code | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{code}` | {text} |" for code, text in REASONS.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(catalogue_markdown(), end="")

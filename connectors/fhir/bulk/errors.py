"""Typed errors of the Bulk Data client: a reason code, the HTTP status, an issue code, no PHI.

An OperationOutcome's `diagnostics` and `details.text` are free text a server may fill with
record content ("Patient Jane Doe not found"), so only `issue.code` (a FHIR IssueType code
such as `not-found` or `exception`) is ever read from it.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from domain.reasons import REASONS

# FHIR IssueType codes and OAuth error codes are short lower-case tokens; anything else is
# not a code and is dropped rather than echoed.
_CODE = re.compile(r"[a-z][a-z0-9_\-]{0,39}")


class BulkDataError(Exception):
    """Base of every Bulk Data client error; `reason` is a code from domain.reasons."""

    reason = "FHIR_BULK_BAD_RESPONSE"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        if self.reason not in REASONS:  # pragma: no cover - guarded by the catalogue test
            raise ValueError(f"unknown reason code {self.reason!r}")
        self.status = status
        self.code = code  # OperationOutcome issue.code or OAuth `error`, when the server sent one
        detail = [f"HTTP {status}"] if status is not None else []
        detail += [f"code {code}"] if code else []
        suffix = f" ({', '.join(detail)})" if detail else ""
        super().__init__(f"{self.reason}: {message}{suffix}")


class BulkAuthError(BulkDataError):
    reason = "FHIR_BULK_AUTH_FAILED"


class BulkRequestRefused(BulkDataError):
    reason = "FHIR_BULK_REQUEST_REFUSED"


class BulkExportFailed(BulkDataError):
    reason = "FHIR_BULK_EXPORT_FAILED"


class BulkRateLimited(BulkDataError):
    reason = "FHIR_BULK_RATE_LIMITED"


class BulkUnavailable(BulkDataError):
    reason = "FHIR_BULK_UNAVAILABLE"


class BulkTlsError(BulkDataError):
    reason = "FHIR_BULK_TLS_FAILED"


class BulkProtocolError(BulkDataError):
    reason = "FHIR_BULK_BAD_RESPONSE"


class BulkTimeout(BulkDataError):
    reason = "FHIR_BULK_TIMEOUT"


def safe_code(value: Any) -> str | None:
    """`value` when it looks like a protocol code, else None (never free text)."""
    return value if isinstance(value, str) and _CODE.fullmatch(value) else None


def outcome_code(body: bytes) -> str | None:
    """The issue code of the first error/fatal issue of an OperationOutcome body, if any.

    Falls back to an OAuth error body's `error` field, which token endpoints send instead.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("resourceType") == "OperationOutcome":
        issues = data.get("issue")
        if not isinstance(issues, list):
            return None
        ranked = sorted(
            (i for i in issues if isinstance(i, dict)),
            key=lambda issue: issue.get("severity") not in ("fatal", "error"),
        )
        return safe_code(ranked[0].get("code")) if ranked else None
    return safe_code(data.get("error"))


def is_transient(code: str | None) -> bool:
    """Whether an issue code says "try again later" (the spec's hint for polling failures)."""
    return code in ("transient", "lock-error", "no-store", "timeout", "incomplete", "throttled")

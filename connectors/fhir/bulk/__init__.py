"""FHIR Bulk Data ($export) client with SMART Backend Services authentication.

Modules: `transport` (HTTPS, retries), `jws` (RS384/ES384 signing), `auth` (client assertion
and token cache), `client` (kick-off, polling, download, delete), `manifest`, `download`,
`export` (the whole flow), `errors` (typed, reason-coded), `testserver` (an in-process
HTTPS server implementing the asynchronous request pattern, for tests and demos).
"""

from connectors.fhir.bulk.auth import BackendServicesAuth
from connectors.fhir.bulk.client import BulkDataClient, Progress
from connectors.fhir.bulk.errors import (
    BulkAuthError,
    BulkDataError,
    BulkExportFailed,
    BulkProtocolError,
    BulkRateLimited,
    BulkRequestRefused,
    BulkTimeout,
    BulkTlsError,
    BulkUnavailable,
)
from connectors.fhir.bulk.export import ExportResult, make_client, run_export
from connectors.fhir.bulk.transport import Transport

__all__ = [
    "BackendServicesAuth",
    "BulkAuthError",
    "BulkDataClient",
    "BulkDataError",
    "BulkExportFailed",
    "BulkProtocolError",
    "BulkRateLimited",
    "BulkRequestRefused",
    "BulkTimeout",
    "BulkTlsError",
    "BulkUnavailable",
    "ExportResult",
    "Progress",
    "Transport",
    "make_client",
    "run_export",
]

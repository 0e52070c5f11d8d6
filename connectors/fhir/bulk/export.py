"""One whole `$export`: kick-off, wait, download, optional delete; and the client factory.

The result lists the downloaded output files (ready for `services.ingest.ingest_uris`) with
their sizes, checksums and line counts: numbers and names only, no PHI.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from connectors.fhir.bulk.auth import DEFAULT_SCOPE, BackendServicesAuth
from connectors.fhir.bulk.client import BulkDataClient, ProgressCallback
from connectors.fhir.bulk.download import DownloadedFile
from connectors.fhir.bulk.jws import load_private_key
from connectors.fhir.bulk.manifest import Manifest
from connectors.fhir.bulk.transport import Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportResult:
    status_url: str
    manifest: Manifest
    files: tuple[DownloadedFile, ...]
    polls: int
    deleted: bool

    def output_uris(self) -> list[str]:
        """The resource files (not error/deleted files), in manifest order: what to ingest."""
        return [f.uri for f in self.files if f.kind == "output"]

    def as_dict(self) -> dict[str, object]:
        return {
            "transaction_time": self.manifest.transaction_time,
            "polls": self.polls,
            "deleted": self.deleted,
            "files": [f.as_dict() for f in self.files],
        }


def run_export(
    client: BulkDataClient,
    out: str | Path,
    *,
    group: str | None = None,
    types: Sequence[str] = (),
    since: str | dt.datetime | None = None,
    delete: bool = True,
    on_progress: ProgressCallback | None = None,
    max_wait: float = 24 * 3600.0,
) -> ExportResult:
    """Run one export end to end and download every manifest file under `out`."""
    status_url = client.kick_off(group=group, types=types, since=since)
    manifest, polls = client.wait(status_url, on_progress=on_progress, max_wait=max_wait)
    files = client.download(manifest, str(out))
    deleted = client.delete(status_url) if delete else False
    log.info(
        "bulk export complete: %d files, %d resources, %d polls",
        len(files),
        sum(f.lines for f in files if f.kind == "output"),
        polls,
    )
    return ExportResult(status_url, manifest, tuple(files), polls, deleted)


def make_client(
    base_url: str,
    *,
    client_id: str,
    key_file: str | Path,
    token_url: str,
    scope: str = DEFAULT_SCOPE,
    kid: str | None = None,
    ca_file: str | None = None,
    transport: Transport | None = None,
) -> BulkDataClient:
    """A client authenticating with SMART Backend Services using the PEM key in `key_file`."""
    transport = transport or Transport(ca_file=ca_file)
    key = load_private_key(Path(key_file).read_bytes())
    auth = BackendServicesAuth(client_id, token_url, key, transport, scope=scope, kid=kid)
    return BulkDataClient(base_url, transport, auth)

"""The completed export's manifest: which files to fetch, of what type, and whether with a token.

Parsed strictly enough that a file name built from a type can never escape the download
folder, and that no output file is fetched over plain http.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from connectors.fhir.bulk.errors import BulkProtocolError
from connectors.fhir.bulk.transport import require_https

FileKind = Literal["output", "error", "deleted"]
_KINDS: tuple[FileKind, ...] = ("output", "error", "deleted")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One file the server produced: `output` resources, `error` OperationOutcomes or `deleted`."""

    kind: FileKind
    resource_type: str
    url: str
    count: int | None


@dataclass(frozen=True, slots=True)
class Manifest:
    transaction_time: str
    request: str
    requires_access_token: bool
    files: tuple[ManifestFile, ...]

    def of_kind(self, kind: FileKind) -> list[ManifestFile]:
        return [f for f in self.files if f.kind == kind]


def parse_manifest(data: Any) -> Manifest:
    """A Manifest from the decoded JSON body of the status endpoint's 200 answer."""
    if not isinstance(data, dict):
        raise BulkProtocolError("manifest is not a JSON object")
    transaction_time = data.get("transactionTime")
    requires_token = data.get("requiresAccessToken")
    if not isinstance(transaction_time, str) or not isinstance(requires_token, bool):
        raise BulkProtocolError("manifest lacks transactionTime or requiresAccessToken")
    files: list[ManifestFile] = []
    for kind in _KINDS:
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise BulkProtocolError(f"manifest {kind} is not a list")
        for n, entry in enumerate(entries, 1):
            files.append(_file(kind, n, entry))
    request = data.get("request")
    return Manifest(
        transaction_time=transaction_time,
        request=request if isinstance(request, str) else "",
        requires_access_token=requires_token,
        files=tuple(files),
    )


def _file(kind: FileKind, n: int, entry: Any) -> ManifestFile:
    where = f"manifest {kind} entry {n}"
    if not isinstance(entry, dict):
        raise BulkProtocolError(f"{where} is not an object")
    resource_type, url, count = entry.get("type"), entry.get("url"), entry.get("count")
    if not isinstance(resource_type, str) or not _RESOURCE_TYPE.fullmatch(resource_type):
        raise BulkProtocolError(f"{where} has no valid resource type")
    if not isinstance(url, str):
        raise BulkProtocolError(f"{where} has no url")
    try:
        require_https(url, f"{where} url")
    except ValueError as exc:
        raise BulkProtocolError(str(exc)) from None
    if count is not None and (type(count) is not int or count < 0):
        raise BulkProtocolError(f"{where} has an invalid count")
    return ManifestFile(kind, resource_type, url, count)

"""Write one downloaded export file to a local folder (atomically, 0600) or any smart_open URI.

Files are named `{Type}.{nnn}.ndjson` (manifest order per type), with error and deleted files
in `error/` and `deleted/` beside them, so `detect_source` and `read_fhir` take them as FHIR
NDJSON. A plain path is written to a temporary name, fsynced and renamed, so a file is
there whole or not at all; a URI (s3://, sftp://, file://...) is written by smart_open. The
bytes are streamed: memory stays at one chunk whatever the file size. Size,
SHA-256 and line count are measured on the way through, for the ingest manifest and for a
check against the manifest's `count`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from connectors.fhir.bulk.manifest import FileKind


@dataclass(frozen=True, slots=True)
class DownloadedFile:
    kind: FileKind
    resource_type: str
    uri: str
    size: int
    sha256: str
    lines: int
    manifest_count: int | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def destination(out: str, kind: FileKind, resource_type: str, n: int) -> str:
    """Where the n-th (1-based) file of `resource_type` goes under `out` (folder or URI)."""
    folder = out.rstrip("/") if out not in ("", "/") else out
    sub = "" if kind == "output" else f"/{kind}"
    return f"{folder}{sub}/{resource_type}.{n - 1:03d}.ndjson"


def is_local(uri: str) -> bool:
    """A plain path (written atomically here); any `scheme://` goes through smart_open."""
    return "://" not in uri


def write_stream(chunks: Iterable[bytes], uri: str) -> tuple[int, str, int]:
    """Write `chunks` to `uri`; (bytes, sha256 hex, lines). A local file appears whole or not."""
    meter = _Meter()
    if is_local(uri):
        path = Path(uri)
        # The folder holds PHI until it is ingested: owner-only, like the hub's inbound drop.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                meter.copy(chunks, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    else:
        import smart_open  # deferred: its cloud back-ends are slow to import

        if uri.startswith("file://"):  # object stores need no folders; a file system does
            Path(urlsplit(uri).path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with smart_open.open(uri, "wb", compression="disable") as fh:
            meter.copy(chunks, fh)
    return meter.size, meter.digest.hexdigest(), meter.lines


class _Meter:
    """Size, SHA-256 and line count of the bytes copied through it."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.newlines = 0
        self.last = b"\n"

    @property
    def lines(self) -> int:
        # A last line without its newline still counts.
        return self.newlines + (1 if self.size and self.last != b"\n" else 0)

    def copy(self, chunks: Iterable[bytes], sink: IO[bytes]) -> None:
        for chunk in chunks:
            if chunk:
                sink.write(chunk)
                self.digest.update(chunk)
                self.size += len(chunk)
                self.newlines += chunk.count(b"\n")
                self.last = chunk[-1:]

"""FHIR Bulk Data `$export` client: kick-off, status polling, download, delete.

The asynchronous request pattern (FHIR Bulk Data Access IG 2.0):
1. kick-off `GET [base]/$export` or `[base]/Group/[id]/$export` with `Accept:
   application/fhir+json` and `Prefer: respond-async` -> 202 and a Content-Location;
2. poll that status URL: 202 while running (Retry-After, X-Progress), 200 with the manifest
   when done, 4xx/5xx with an OperationOutcome when the job failed;
3. download every file in the manifest, with the bearer token when `requiresAccessToken`;
4. optionally DELETE the status URL so the server can free the files.

Errors are typed (errors.py) with the reason code, HTTP status and OperationOutcome issue
code, never the server's free text. The bearer token is only ever sent to the origin of the
base URL: a manifest pointing a token-requiring file at another host is refused.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

import orjson
import requests

from connectors.fhir.bulk.auth import BackendServicesAuth
from connectors.fhir.bulk.download import DownloadedFile, destination, write_stream
from connectors.fhir.bulk.errors import (
    BulkAuthError,
    BulkDataError,
    BulkExportFailed,
    BulkProtocolError,
    BulkRequestRefused,
    BulkTimeout,
    BulkUnavailable,
    is_transient,
    outcome_code,
)
from connectors.fhir.bulk.manifest import FileKind, Manifest, ManifestFile, parse_manifest
from connectors.fhir.bulk.transport import TRANSIENT_ERRORS, Transport, require_https

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PROGRESS = re.compile(r"[\x20-\x7e]{1,100}")
DOWNLOAD_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Progress:
    """One 202 answer of the status endpoint: poll number, X-Progress text, next wait."""

    poll: int
    text: str | None
    wait_seconds: float


ProgressCallback = Callable[[Progress], None]


class BulkDataClient:
    """Talks to one FHIR server's Bulk Data endpoints; one instance per thread."""

    def __init__(
        self,
        base_url: str,
        transport: Transport,
        auth: BackendServicesAuth | None = None,
        *,
        poll_interval: float = 2.0,
        max_poll_interval: float = 120.0,
    ) -> None:
        self.base_url = require_https(base_url, "FHIR base URL").rstrip("/")
        self.transport = transport
        self.auth = auth
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self._origin = _origin(self.base_url)

    # --- the four steps ---------------------------------------------------------------------

    def kick_off(
        self,
        *,
        group: str | None = None,
        types: Sequence[str] = (),
        since: str | dt.datetime | None = None,
    ) -> str:
        """Start a system (`group=None`) or group export; the status URL to poll."""
        if group is not None and not _FHIR_ID.fullmatch(group):
            raise ValueError("group must be a FHIR id (letters, digits, '-', '.')")
        bad = [t for t in types if not _RESOURCE_TYPE.fullmatch(t)]
        if bad:
            raise ValueError("types must be FHIR resource type names such as Patient")
        params: dict[str, str] = {}
        if types:
            params["_type"] = ",".join(types)
        if since is not None:
            params["_since"] = _instant(since)
        path = f"/Group/{group}/$export" if group else "/$export"
        url = self.base_url + path + (f"?{urlencode(params, safe=',:')}" if params else "")
        headers = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
        resp = self._send("kick-off", "GET", url, headers)
        with resp:
            if resp.status_code != 202:
                raise self._refused("kick-off", resp, BulkRequestRefused)
            location = resp.headers.get("Content-Location")
        if not location:
            raise BulkProtocolError("kick-off: 202 without a Content-Location", status=202)
        status_url = urljoin(url, location)
        try:
            return require_https(status_url, "status URL")
        except ValueError as exc:
            raise BulkProtocolError(f"kick-off: {exc}") from None

    def wait(
        self,
        status_url: str,
        *,
        on_progress: ProgressCallback | None = None,
        max_wait: float = 24 * 3600.0,
    ) -> tuple[Manifest, int]:
        """Poll until the manifest is ready; (manifest, number of polls).

        Waits as long as Retry-After says; without one, backs off exponentially from
        `poll_interval` up to `max_poll_interval`. Gives up with BulkTimeout rather than wait
        past `max_wait` seconds after the first poll.
        """
        clock = self.transport.clock
        started = clock()
        polls = 0
        slept = 0.0  # counted too, so the budget holds even when `sleep` does not block
        while True:
            resp = self._send("status", "GET", status_url, {"Accept": "application/json"})
            polls += 1
            with resp:
                if resp.status_code == 200:
                    return _manifest(resp), polls
                if resp.status_code != 202:
                    raise self._refused("status", resp, BulkExportFailed)
                delay = self.transport.wait_seconds(resp)
                if delay is None:
                    delay = min(self.max_poll_interval, self.poll_interval * 2 ** (polls - 1))
                text = resp.headers.get("X-Progress", "").strip()
            progress = Progress(polls, text if _PROGRESS.fullmatch(text) else None, delay)
            log.info(
                "bulk export in progress (poll %d, %s); next poll in %.1f s",
                polls,
                progress.text or "no progress reported",
                delay,
            )
            if on_progress is not None:
                on_progress(progress)
            if max(clock() - started, slept) + delay > max_wait:
                raise BulkTimeout(f"export not complete after {polls} polls")
            self.transport.sleep(delay)
            slept += delay

    def download(
        self,
        manifest: Manifest,
        out: str,
        kinds: Iterable[FileKind] = ("output", "error", "deleted"),
    ) -> list[DownloadedFile]:
        """Fetch every file of the chosen kinds into `out` (a folder or smart_open URI prefix)."""
        wanted = set(kinds)
        seen: dict[tuple[str, str], int] = {}
        files = []
        for entry in manifest.files:
            if entry.kind not in wanted:
                continue
            key = (entry.kind, entry.resource_type)
            seen[key] = seen.get(key, 0) + 1
            target = destination(out, entry.kind, entry.resource_type, seen[key])
            files.append(self._download_one(entry, target, manifest.requires_access_token))
        return files

    def delete(self, status_url: str) -> bool:
        """Ask the server to delete the job and its files; False when it was already gone."""
        resp = self._send("delete", "DELETE", status_url, {"Accept": FHIR_JSON})
        with resp:
            if resp.status_code in (200, 202, 204):
                return True
            if resp.status_code in (404, 410):
                return False
            raise self._refused("delete", resp, BulkRequestRefused)

    # --- plumbing ---------------------------------------------------------------------------

    def _download_one(self, entry: ManifestFile, target: str, needs_token: bool) -> DownloadedFile:
        if needs_token and _origin(entry.url) != self._origin:
            # The token is scoped to this server; handing it to another host would leak it.
            raise BulkProtocolError("manifest asks for the access token on another host")
        attempts = self.transport.max_retries + 1
        for attempt in range(attempts):
            resp = self._send(
                "download",
                "GET",
                entry.url,
                {"Accept": FHIR_NDJSON},
                stream=True,
                with_token=needs_token,
            )
            with resp:
                if resp.status_code != 200:
                    raise self._refused("download", resp, BulkRequestRefused)
                try:
                    size, sha256, lines = write_stream(resp.iter_content(DOWNLOAD_CHUNK), target)
                except TRANSIENT_ERRORS as exc:
                    # The connection dropped mid-file: the partial file was discarded; refetch.
                    log.warning(
                        "bulk download: %s (attempt %d of %d)",
                        type(exc).__name__,
                        attempt + 1,
                        attempts,
                    )
                    if attempt + 1 < attempts:
                        self.transport.sleep(self.transport.backoff(attempt))
                    continue
            if entry.count is not None and entry.count != lines:
                log.warning(
                    "bulk download: %s file has %d lines, the manifest said %d",
                    entry.resource_type,
                    lines,
                    entry.count,
                )
            return DownloadedFile(
                entry.kind, entry.resource_type, target, size, sha256, lines, entry.count
            )
        raise BulkUnavailable(f"download: connection dropped {attempts} times")

    def _send(
        self,
        op: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        stream: bool = False,
        with_token: bool = True,
    ) -> requests.Response:
        """One request with the bearer token; a 401 refreshes the token once and retries."""
        final = _job_failed if op == "status" else None
        for renewed in (False, True):
            sent = dict(headers)
            if self.auth is not None and with_token:
                sent["Authorization"] = f"Bearer {self.auth.access_token()}"
            resp = self.transport.send(op, method, url, headers=sent, stream=stream, final=final)
            if resp.status_code == 401 and self.auth is not None and with_token and not renewed:
                # The server revoked or expired the token early: fetch a new one, try again.
                resp.close()
                self.auth.invalidate()
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _refused(op: str, resp: requests.Response, default: type[BulkDataError]) -> BulkDataError:
        status = resp.status_code
        code = outcome_code(resp.content)
        if status in (401, 403):
            return BulkAuthError(f"{op}: access refused", status=status, code=code)
        if 300 <= status < 400:
            return BulkProtocolError(f"{op}: redirects are not followed", status=status)
        if 200 <= status < 300:
            return BulkProtocolError(f"{op}: unexpected success status", status=status)
        return default(f"{op}: server refused the request", status=status, code=code)


def _job_failed(resp: requests.Response) -> bool:
    """A 5xx from the status endpoint whose OperationOutcome says the job failed for good.

    The spec reserves transient issue codes for polling hiccups that are worth retrying; any
    other coded 5xx ends the export, and is not retried.
    """
    code = outcome_code(resp.content)
    return resp.status_code >= 500 and code is not None and not is_transient(code)


def _manifest(resp: requests.Response) -> Manifest:
    try:
        data = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        raise BulkProtocolError("status: manifest is not JSON", status=200) from None
    return parse_manifest(data)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or 443


def _instant(since: str | dt.datetime) -> str:
    """A FHIR instant for `_since` (timezone required: a local time would shift the window)."""
    if isinstance(since, str):
        try:
            parsed = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("since must be an ISO 8601 instant with a time zone") from None
    else:
        parsed = since
    if parsed.tzinfo is None:
        raise ValueError("since must carry a time zone (e.g. 2024-01-01T00:00:00Z)")
    return parsed.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

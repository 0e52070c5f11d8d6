"""HTTPS transport for the Bulk Data client: TLS always verified, bounded retries, no redirects.

- Only https:// URLs are accepted, loopback included: the hub moves PHI, and a test server
  speaks TLS too (with a local CA passed as `ca_file`).
- Certificates are always verified (`verify=ca_file or True`); a refused certificate is a
  BulkTlsError at once, never retried.
- 429 and 5xx answers and dropped connections are retried up to `max_retries` times, waiting
  for Retry-After (seconds or an HTTP date) when the server sends one, else exponential
  backoff with full jitter. `sleep`, `clock` and `rng` are injectable so tests observe the
  waits without waiting.
- Redirects are not followed: one could downgrade the scheme or carry the bearer token to
  another host.
- Bodies are never logged; log lines carry the operation name, status and attempt only.
- Proxy settings and netrc credentials from the environment are ignored (`trust_env` off):
  nothing is routed or authenticated implicitly; pass a configured `session` to use a proxy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from connectors.fhir.bulk.errors import (
    BulkRateLimited,
    BulkTlsError,
    BulkUnavailable,
    outcome_code,
)
from connectors.http_common import certificate_refused, parse_retry_after

log = logging.getLogger(__name__)

USER_AGENT = "audience-hub-bulk-client/1"
# Raised by requests/urllib3 when a connection drops: as transient as a 503.
TRANSIENT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def require_https(url: str, what: str) -> str:
    """`url` if it is an absolute https:// URL, else ValueError naming `what` (not the URL)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https:// URL (plain http is refused)")
    return url


@dataclass
class Transport:
    """One requests.Session plus the retry policy; one instance per thread."""

    ca_file: str | None = None
    timeout: float = 60.0
    max_retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 3600.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.trust_env = False  # no proxy or netrc credentials picked up implicitly
        self.session.headers["User-Agent"] = USER_AGENT

    def close(self) -> None:
        self.session.close()

    def send(
        self,
        op: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        stream: bool = False,
        final: Callable[[requests.Response], bool] | None = None,
    ) -> requests.Response:
        """The first answer that is not 429/5xx (or that `final` accepts as the last word).

        After `max_retries` retries the last 429/5xx is raised as BulkRateLimited or
        BulkUnavailable; dropped connections likewise end as BulkUnavailable.
        """
        require_https(url, f"{op} URL")
        attempts = self.max_retries + 1
        last, status, code, rate_limited = "no attempt", None, None, False
        for attempt in range(attempts):
            delay: float | None = None
            try:
                resp = self.session.request(
                    method,
                    url,
                    headers=dict(headers or {}),
                    data=data,
                    stream=stream,
                    timeout=self.timeout,
                    verify=self.ca_file or True,
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError as exc:
                if certificate_refused(exc):
                    raise BulkTlsError(
                        f"{op}: the server's TLS certificate was not trusted (check ca_file)"
                    ) from None  # the chained text would only repeat the URL
                last, status, code, rate_limited = "TLS error", None, None, False
            except TRANSIENT_ERRORS as exc:
                last, status, code, rate_limited = type(exc).__name__, None, None, False
            else:
                status = resp.status_code
                if status != 429 and status < 500:
                    return resp
                code = outcome_code(resp.content)
                if final is not None and final(resp):
                    return resp
                rate_limited = status == 429
                last = f"HTTP {status}"
                delay = self._retry_after(op, resp, rate_limited, code)
                resp.close()
            log.warning("bulk %s: %s (attempt %d of %d)", op, last, attempt + 1, attempts)
            if attempt + 1 < attempts:
                self.sleep(self.backoff(attempt) if delay is None else delay)
        error = BulkRateLimited if rate_limited else BulkUnavailable
        raise error(f"{op}: no answer after {attempts} attempts ({last})", status=status, code=code)

    def wait_seconds(self, resp: requests.Response) -> float | None:
        """The Retry-After of `resp` in seconds, if it sent a readable one."""
        return parse_retry_after(resp.headers.get("Retry-After"), self.clock())

    def _retry_after(
        self, op: str, resp: requests.Response, rate_limited: bool, code: str | None
    ) -> float | None:
        seconds = self.wait_seconds(resp)
        if seconds is not None and seconds > self.max_retry_after:
            error = BulkRateLimited if rate_limited else BulkUnavailable
            raise error(
                f"{op}: server asked to retry after {seconds:.0f} s (limit "
                f"{self.max_retry_after:.0f} s)",
                status=resp.status_code,
                code=code,
            )
        return seconds

    def backoff(self, attempt: int) -> float:
        # Full jitter (uniform over [0, cap]) spreads out clients that failed together.
        return self.rng.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))

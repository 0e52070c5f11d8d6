"""An in-process HTTPS FHIR Bulk Data server (SANDBOX, loopback only) for tests and demos.

It implements the asynchronous request pattern against NDJSON files in a folder (one
`{Type}.000.ndjson` per resource type, e.g. the public Synthea sample), served read-only:

    POST /auth/token               SMART Backend Services: verifies the RS384/ES384 client
                                   assertion against the registered JWK (signature, iss = sub,
                                   aud, exp at most 5 minutes ahead, unused jti)
    GET  /fhir/$export             system-level kick-off  -> 202 + Content-Location
    GET  /fhir/Group/{id}/$export  group-level kick-off   -> 202 + Content-Location
    GET  /jobs/{id}                202 + Retry-After + X-Progress for the first N polls,
                                   then 200 + manifest
    DELETE /jobs/{id}              202; the job and its files are gone afterwards
    GET  /files/{id}/{name}        the NDJSON file (bearer token when requiresAccessToken)

Faults are injected per route (`inject`: a 429 with Retry-After, a 500 once...) and whole
jobs can be made to fail (`fail_jobs`). Every OperationOutcome it sends carries a PHI-like
canary in `diagnostics`, so tests can prove the client never repeats server free text.
The signature check is written independently of the client's signing code (verification
from the JWK numbers), so a bug in one is not mirrored by the other.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import secrets
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sandbox.tls import TlsMaterial

CANARY_DIAGNOSTICS = "Patient Jane Q. Canary (MRN CANARY-000-11, DOB 1961-02-03) not found"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_AHEAD = 300 + 60  # the 5-minute rule plus clock skew
_FILE_NAME = re.compile(r"([A-Z][A-Za-z]+)\.\d{3}\.ndjson")
_CHUNK = 64 * 1024


@dataclass
class Fault:
    """One injected answer: the status, an optional Retry-After and an OperationOutcome code."""

    status: int
    retry_after: str | None = None
    code: str | None = None
    truncate: bool = False  # answer normally but drop the connection halfway through the body


@dataclass
class Job:
    id: str
    request: str
    types: list[str]
    transaction_time: str
    polls: int = 0
    deleted: bool = False


class TokenRefused(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass
class ServerState:
    """Everything the handler reads and the test inspects; guarded by `lock`."""

    data_dir: Path
    polls_before_done: int = 2
    retry_after: str | None = "1"
    requires_access_token: bool = True
    token_lifetime: int = 300
    groups: tuple[str, ...] = ("sample-10",)
    error_file: bool = False
    clock: Callable[[], float] = time.time
    origin: str = ""
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # client_id -> kid -> key
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires_at
    used_jti: set[str] = field(default_factory=set)
    jobs: dict[str, Job] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    job_failure: Fault | None = None
    counts: Counter[str] = field(default_factory=Counter)  # route -> requests answered
    scopes: list[str] = field(default_factory=list)  # scopes of issued tokens
    lock: threading.Lock = field(default_factory=threading.Lock)
    files: dict[str, tuple[Path, int]] = field(default_factory=dict)  # type -> (path, lines)

    def load_files(self) -> None:
        for path in sorted(self.data_dir.glob("*.ndjson")):
            match = _FILE_NAME.fullmatch(path.name)
            if match:
                with path.open("rb") as fh:
                    lines = sum(1 for line in fh if line.strip())
                self.files[match.group(1)] = (path, lines)


class BulkTestServer:
    """Start with `with BulkTestServer(data_dir, tls) as server:`; then `server.base_url`."""

    def __init__(self, data_dir: str | Path, tls: TlsMaterial, **options: Any) -> None:
        self.state = ServerState(Path(data_dir), **options)
        self.state.load_files()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls.cert_path), str(tls.key_path))
        self._httpd = _Server(("127.0.0.1", 0), ctx, self.state)
        self.state.origin = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"{self.state.origin}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.state.origin}/auth/token"

    @property
    def counts(self) -> Counter[str]:
        return self.state.counts

    def start(self) -> BulkTestServer:
        # A short poll interval keeps stop() quick (it waits for the loop to notice).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> BulkTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls ----------------------------------------------------------------------

    def register_client(self, client_id: str, jwk: dict[str, str]) -> None:
        """Register a public JWK (as the client would in the server's admin console)."""
        with self.state.lock:
            self.state.keys.setdefault(client_id, {})[jwk["kid"]] = _public_key(jwk)

    def inject(
        self, route: str, status: int, *, retry_after: str | None = None, code: str | None = None
    ) -> None:
        """Answer the next request on `route` (token|kickoff|status|file|delete) with a fault."""
        with self.state.lock:
            self.state.faults.setdefault(route, []).append(Fault(status, retry_after, code))

    def drop_next_download(self) -> None:
        """Cut the next file download off halfway (the connection closes mid-body)."""
        with self.state.lock:
            self.state.faults.setdefault("file", []).append(Fault(200, truncate=True))

    def fail_jobs(self, status: int = 500, code: str = "exception") -> None:
        """From now on every status poll says the job failed (OperationOutcome `code`)."""
        with self.state.lock:
            self.state.job_failure = Fault(status, None, code)

    def expire_tokens(self) -> None:
        """Revoke every issued token early (the client must notice the 401 and renew)."""
        with self.state.lock:
            self.state.tokens.clear()

    def job(self, job_id: str) -> Job:
        return self.state.jobs[job_id]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext, state: ServerState):
        self.ssl_context = ctx
        self.state = state
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Handshake in the worker thread: a client that refuses our CA stalls nobody else.
        request.settimeout(10)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "audience-hub-SANDBOX-fhir-bulk/1"
    sys_version = ""
    timeout = 10
    server: _Server
    _truncate = False

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test server is quiet; tests read `counts` instead

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        state = self.server.state
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        body = self._body()
        route, args = _route(method, path)
        if route is None:
            self._outcome(404, "not-found")
            return
        with state.lock:
            state.counts[route] += 1
            queued = state.faults.get(route)
            fault = queued.pop(0) if queued else None
        self._truncate = fault is not None and fault.truncate
        if fault is not None and not fault.truncate:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._outcome(fault.status, fault.code or "transient", headers)
            return
        if route == "token":
            self._token(body)
            return
        if route == "file" and self.headers.get("Authorization"):
            with state.lock:
                state.counts["file_with_token"] += 1
        if (route != "file" or state.requires_access_token) and not self._authorized():
            self._outcome(401, "login")
            return
        getattr(self, f"_{route}")(query, *args)

    # --- routes -------------------------------------------------------------------------------

    def _token(self, body: bytes) -> None:
        state = self.server.state
        form = {k: v[-1] for k, v in parse_qs(body.decode("ascii", "replace")).items()}
        try:
            if form.get("grant_type") != "client_credentials":
                raise TokenRefused(400, "unsupported_grant_type", "grant type not supported")
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise TokenRefused(400, "invalid_request", "wrong client_assertion_type")
            scope = form.get("scope", "")
            if not scope or not all(s.startswith("system/") for s in scope.split()):
                raise TokenRefused(400, "invalid_scope", "only system/ scopes are granted")
            with state.lock:
                _verify_assertion(form.get("client_assertion", ""), state, self._token_url())
                token = secrets.token_urlsafe(32)
                state.tokens[token] = state.clock() + state.token_lifetime
                state.scopes.append(scope)
        except TokenRefused as refused:
            self._json(refused.status, {"error": refused.error, "error_description": "refused"})
            return
        answer = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": state.token_lifetime,
            "scope": scope,
        }
        self._json(200, answer, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _kickoff(self, query: dict[str, str], group: str | None = None) -> None:
        state = self.server.state
        if "respond-async" not in self.headers.get("Prefer", ""):
            self._outcome(400, "invalid")
            return
        if self.headers.get("Accept") != "application/fhir+json":
            self._outcome(400, "invalid")
            return
        if group is not None and group not in state.groups:
            self._outcome(404, "not-found")
            return
        types = [t for t in query.get("_type", "").split(",") if t] or sorted(state.files)
        if any(t not in state.files for t in types):
            self._outcome(400, "not-supported")
            return
        if "_since" in query:
            try:
                dt.datetime.fromisoformat(query["_since"].replace("Z", "+00:00"))
            except ValueError:
                self._outcome(400, "invalid")
                return
        job = Job(
            id=uuid.uuid4().hex,
            request=f"{state.origin}{self.path}",
            types=types,
            transaction_time=dt.datetime.fromtimestamp(state.clock(), dt.UTC).isoformat(),
        )
        with state.lock:
            state.jobs[job.id] = job
        self._send(202, b"", "application/fhir+json", {"Content-Location": _job_url(state, job)})

    def _status(self, query: dict[str, str], job_id: str) -> None:
        state = self.server.state
        with state.lock:
            job = state.jobs.get(job_id)
            failure = state.job_failure
            if job is not None and not job.deleted:
                job.polls += 1
        if job is None or job.deleted:
            self._outcome(404, "not-found")
            return
        if failure is not None:
            self._outcome(failure.status, failure.code or "exception")
            return
        if job.polls <= state.polls_before_done:
            done = int(100 * job.polls / (state.polls_before_done + 1))
            headers = {"X-Progress": f"{done}% complete, exporting {len(job.types)} types"}
            if state.retry_after is not None:
                headers["Retry-After"] = state.retry_after
            self._send(202, b"", "application/json", headers)
            return
        self._json(200, _manifest(state, job))

    def _delete(self, query: dict[str, str], job_id: str) -> None:
        state = self.server.state
        with state.lock:
            job = state.jobs.get(job_id)
            if job is None or job.deleted:
                job = None
            else:
                job.deleted = True
        if job is None:
            self._outcome(404, "not-found")
        else:
            self._send(202, b"", "application/fhir+json", {})

    def _file(self, query: dict[str, str], job_id: str, name: str) -> None:
        state = self.server.state
        job = state.jobs.get(job_id)
        match = _FILE_NAME.fullmatch(name)
        if name == "OperationOutcome.error.ndjson" and job is not None and not job.deleted:
            self._send(200, _ERROR_FILE, "application/fhir+ndjson", {})
            return
        if job is None or job.deleted or match is None or match.group(1) not in job.types:
            self._outcome(404, "not-found")
            return
        path, _ = state.files[match.group(1)]
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+ndjson")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with path.open("rb") as fh:
            if self._truncate:
                self.wfile.write(fh.read(size // 2))
                self.wfile.flush()
                self.close_connection = True
                return
            while chunk := fh.read(_CHUNK):
                self.wfile.write(chunk)

    # --- helpers ------------------------------------------------------------------------------

    def _token_url(self) -> str:
        return f"{self.server.state.origin}/auth/token"

    def _authorized(self) -> bool:
        state = self.server.state
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        with state.lock:
            expires_at = state.tokens.get(auth[7:])
        return expires_at is not None and expires_at > state.clock()

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length and length.isdigit() else b""

    def _outcome(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": CANARY_DIAGNOSTICS}],
        }
        self._send(status, json.dumps(outcome).encode(), "application/fhir+json", headers or {})

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers or {})

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


_ERROR_FILE = (
    json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "warning", "code": "processing", "diagnostics": "sample"}],
        }
    ).encode()
    + b"\n"
)
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/auth/token"), "token"),
    ("GET", re.compile(r"/fhir/\$export"), "kickoff"),
    ("GET", re.compile(r"/fhir/Group/([A-Za-z0-9\-.]{1,64})/\$export"), "kickoff"),
    ("GET", re.compile(r"/jobs/([0-9a-f]{32})"), "status"),
    ("DELETE", re.compile(r"/jobs/([0-9a-f]{32})"), "delete"),
    ("GET", re.compile(r"/files/([0-9a-f]{32})/([A-Za-z.0-9]{1,80})"), "file"),
]


def _route(method: str, path: str) -> tuple[str | None, tuple[str, ...]]:
    for route_method, pattern, name in _ROUTES:
        match = pattern.fullmatch(path)
        if match and route_method == method:
            return name, match.groups()
    return None, ()


def _job_url(state: ServerState, job: Job) -> str:
    return f"{state.origin}/jobs/{job.id}"


def _manifest(state: ServerState, job: Job) -> dict[str, Any]:
    output = [
        {
            "type": t,
            "url": f"{state.origin}/files/{job.id}/{t}.000.ndjson",
            "count": state.files[t][1],
        }
        for t in job.types
    ]
    errors = []
    if state.error_file:
        url = f"{state.origin}/files/{job.id}/OperationOutcome.error.ndjson"
        errors.append({"type": "OperationOutcome", "url": url, "count": 1})
    return {
        "transactionTime": job.transaction_time,
        "request": job.request,
        "requiresAccessToken": state.requires_access_token,
        "output": output,
        "error": errors,
    }


# --- client assertion verification (independent of connectors.fhir.bulk.jws) ---------------


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64int(part: str) -> int:
    return int.from_bytes(_b64decode(part), "big")


def _public_key(jwk: dict[str, str]) -> Any:
    if jwk["kty"] == "RSA":
        return rsa.RSAPublicNumbers(_b64int(jwk["e"]), _b64int(jwk["n"])).public_key()
    if jwk["kty"] == "EC" and jwk["crv"] == "P-384":
        numbers = ec.EllipticCurvePublicNumbers(
            _b64int(jwk["x"]), _b64int(jwk["y"]), ec.SECP384R1()
        )
        return numbers.public_key()
    raise ValueError("unsupported JWK")


def _verify_assertion(assertion: str, state: ServerState, token_url: str) -> str:
    """The client id the assertion proves, or TokenRefused (401 invalid_client)."""

    def refuse(why: str) -> TokenRefused:
        return TokenRefused(401, "invalid_client", why)

    try:
        head_b64, claims_b64, sig_b64 = assertion.split(".")
        header = json.loads(_b64decode(head_b64))
        claims = json.loads(_b64decode(claims_b64))
        signature = _b64decode(sig_b64)
    except (ValueError, TypeError):
        raise refuse("malformed assertion") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise refuse("malformed assertion")
    client_id = claims.get("iss")
    key = (
        state.keys.get(client_id, {}).get(header.get("kid")) if isinstance(client_id, str) else None
    )
    if key is None or header.get("typ") != "JWT":
        raise refuse("unknown client or key")
    signed = f"{head_b64}.{claims_b64}".encode()
    try:
        if header.get("alg") == "RS384" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA384())
        elif header.get("alg") == "ES384" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 96:
                raise refuse("bad signature")
            r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
            key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA384()))
        else:
            raise refuse("algorithm does not match the registered key")
    except InvalidSignature:
        raise refuse("bad signature") from None
    now = state.clock()
    exp, jti = claims.get("exp"), claims.get("jti")
    if claims.get("sub") != client_id or claims.get("aud") != token_url:
        raise refuse("sub or aud wrong")
    if not isinstance(exp, int) or exp <= now or exp > now + MAX_ASSERTION_AHEAD:
        raise refuse("assertion expired or too long-lived")
    if not isinstance(jti, str) or not jti or jti in state.used_jti:
        raise refuse("jti missing or replayed")
    state.used_jti.add(jti)
    return client_id

"""FHIR Bulk Data client against the in-process HTTPS test server (real TLS, real JWT crypto).

Waits are observed through an injected sleep function, never timed.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import logging
import random
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from connectors.fhir import read_fhir
from connectors.fhir.bulk import (
    BackendServicesAuth,
    BulkAuthError,
    BulkDataClient,
    BulkExportFailed,
    BulkProtocolError,
    BulkRateLimited,
    BulkRequestRefused,
    BulkTimeout,
    BulkTlsError,
    BulkUnavailable,
    Transport,
    run_export,
)
from connectors.fhir.bulk.errors import outcome_code, safe_code
from connectors.fhir.bulk.jws import public_jwk
from connectors.fhir.bulk.manifest import Manifest, ManifestFile, parse_manifest
from connectors.fhir.bulk.testserver import BulkTestServer
from connectors.http_common import parse_retry_after
from domain.reasons import REASONS
from domain.records import Rejection, SourceRecord
from sandbox.tls import TlsMaterial, ensure_local_ca

CLIENT_ID = "audience-hub-test"
CANARY_PARTS = ("Canary", "CANARY-000-11", "1961-02-03")


@pytest.fixture(scope="module")
def bulk_dir(shared_data: Path) -> Path:
    return shared_data / "fhir" / "bulk-ndjson-10-patients"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return ensure_local_ca(tmp_path_factory.mktemp("bulk-tls"))


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def make_server(bulk_dir, tls, ec_key):
    started: list[BulkTestServer] = []

    def make(**options) -> BulkTestServer:
        server = BulkTestServer(bulk_dir, tls, **options).start()
        server.register_client(CLIENT_ID, public_jwk(ec_key))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


class Harness:
    """A client wired to a server, recording every wait it asks for."""

    def __init__(self, server, tls, key, *, clock=time.time, **transport_options) -> None:
        self.sleeps: list[float] = []
        self.transport = Transport(
            ca_file=str(tls.ca_cert_path),
            sleep=self.sleeps.append,
            clock=clock,
            rng=random.Random(7),
            **transport_options,
        )
        self.auth = BackendServicesAuth(CLIENT_ID, server.token_url, key, self.transport)
        self.client = BulkDataClient(server.base_url, self.transport, self.auth, poll_interval=1)


@pytest.fixture
def harness(tls, ec_key):
    def make(server, key=None, **options) -> Harness:
        return Harness(server, tls, key or ec_key, **options)

    return make


def _no_canary(text: str) -> None:
    for part in CANARY_PARTS:
        assert part not in text


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jwt_parts(token: str) -> tuple[dict, dict]:
    def decode(part: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    head, claims, _ = token.split(".")
    return decode(head), decode(claims)


# --- the whole flow ---------------------------------------------------------------------------


def test_system_export_downloads_every_file_and_every_line_ends_record_or_rejection(
    make_server, harness, bulk_dir, tmp_path
):
    server = make_server(error_file=True)
    h = harness(server)
    result = run_export(h.client, tmp_path / "out")

    outputs = [f for f in result.files if f.kind == "output"]
    sources = sorted(p for p in bulk_dir.glob("*.000.ndjson"))
    assert sorted(Path(f.uri).name for f in outputs) == [p.name for p in sources]
    assert [f.kind for f in result.files].count("error") == 1
    assert result.output_uris() == [f.uri for f in outputs]
    for downloaded in outputs:
        path = Path(downloaded.uri)
        assert downloaded.sha256 == _sha256(bulk_dir / path.name) == _sha256(path)
        assert downloaded.lines == downloaded.manifest_count
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        items = list(read_fhir(downloaded.uri))
        non_blank = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        assert len(items) == non_blank, path.name
        assert all(isinstance(item, SourceRecord | Rejection) for item in items)
        assert {i.reason for i in items if isinstance(i, Rejection)} <= set(REASONS)
    patients = list(read_fhir(str(tmp_path / "out" / "Patient.000.ndjson")))
    assert patients and all(isinstance(p, SourceRecord) for p in patients)
    # Done: the job was deleted and one token served the whole run.
    assert result.deleted and server.job(result.status_url.rsplit("/", 1)[1]).deleted
    assert server.counts["token"] == 1 and h.auth.tokens_fetched == 1
    assert server.counts["file"] == len(result.files)


def test_group_export_uses_the_group_endpoint_with_type_and_since(make_server, harness, tmp_path):
    server = make_server(polls_before_done=0)
    h = harness(server)
    result = run_export(
        h.client,
        tmp_path,
        group="sample-10",
        types=["Patient", "Condition"],
        since="2024-01-01T00:00:00+00:00",
        delete=False,
    )
    request = server.job(result.status_url.rsplit("/", 1)[1]).request
    assert "/fhir/Group/sample-10/$export?" in request
    assert "_type=Patient,Condition" in request and "_since=2024-01-01T00:00:00Z" in request
    assert [f.resource_type for f in result.files] == ["Patient", "Condition"]
    assert result.polls == 1 and not result.deleted


def test_a_deleted_job_is_gone(make_server, harness):
    server = make_server(polls_before_done=0)
    h = harness(server)
    status_url = h.client.kick_off(types=["Patient"])
    assert h.client.delete(status_url) is True
    assert h.client.delete(status_url) is False
    with pytest.raises(BulkExportFailed) as err:
        h.client.wait(status_url)
    assert err.value.status == 404 and err.value.code == "not-found"


# --- polling ----------------------------------------------------------------------------------


def test_polling_honours_retry_after_seconds_and_reports_progress(make_server, harness):
    server = make_server(polls_before_done=3, retry_after="2")
    h = harness(server)
    progress = []
    status_url = h.client.kick_off(types=["Patient"])
    manifest, polls = h.client.wait(status_url, on_progress=progress.append)
    assert polls == 4 and server.counts["status"] == 4
    assert h.sleeps == [2.0, 2.0, 2.0]
    assert [p.poll for p in progress] == [1, 2, 3]
    assert progress[0].text == "25% complete, exporting 1 types"
    assert [f.resource_type for f in manifest.files] == ["Patient"]


def test_polling_honours_retry_after_as_an_http_date(make_server, harness):
    now = int(time.time())
    server = make_server(
        polls_before_done=1, retry_after=email.utils.formatdate(now + 7, usegmt=True)
    )
    h = harness(server, clock=lambda: float(now))
    h.client.wait(h.client.kick_off(types=["Patient"]))
    assert h.sleeps == [7.0]


def test_polling_without_retry_after_backs_off_exponentially(make_server, harness):
    server = make_server(polls_before_done=4, retry_after=None)
    h = harness(server)
    _, polls = h.client.wait(h.client.kick_off(types=["Patient"]))
    assert polls == 5
    assert h.sleeps == [1.0, 2.0, 4.0, 8.0]


def test_export_that_would_outlast_max_wait_times_out(make_server, harness):
    server = make_server(polls_before_done=10, retry_after="600")
    h = harness(server)
    with pytest.raises(BulkTimeout):
        h.client.wait(h.client.kick_off(types=["Patient"]), max_wait=1000)
    assert h.sleeps == [600.0] and server.counts["status"] == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), ("0", 0.0), (" 5 ", 5.0), ("Thu, 01 Jan 1970 00:01:40 GMT", 60.0)],
)
def test_retry_after_parses_seconds_and_http_dates(value, expected):
    assert parse_retry_after(value, now=40.0) == expected


@pytest.mark.parametrize("value", [None, "", "soon", "-3", "1e9"])
def test_unreadable_retry_after_falls_back_to_backoff(value):
    assert parse_retry_after(value, now=0.0) is None


# --- retries and errors -----------------------------------------------------------------------


def test_rate_limits_and_server_errors_are_retried_with_backoff(make_server, harness, tmp_path):
    server = make_server(polls_before_done=1, retry_after="1")
    server.inject("kickoff", 500)  # once, no Retry-After: jittered backoff
    server.inject("status", 429, retry_after="3")
    server.inject("file", 503, retry_after="2")
    h = harness(server)
    result = run_export(h.client, tmp_path, types=["Patient", "Immunization"])
    assert [f.resource_type for f in result.files] == ["Patient", "Immunization"]
    assert server.counts["kickoff"] == 2 and server.counts["status"] == 3
    backoff, *waits = h.sleeps
    assert 0.0 <= backoff <= 1.0  # full jitter over [0, backoff_base]
    assert waits == [3.0, 1.0, 2.0]  # 429 Retry-After, the 202's Retry-After, the 503's


def test_retries_are_bounded_then_raise_a_typed_error(make_server, harness):
    server = make_server()
    for _ in range(3):
        server.inject("kickoff", 503)
    h = harness(server, max_retries=2)
    with pytest.raises(BulkUnavailable) as err:
        h.client.kick_off()
    assert server.counts["kickoff"] == 3 and len(h.sleeps) == 2
    assert err.value.status == 503 and err.value.reason == "FHIR_BULK_UNAVAILABLE"
    _no_canary(str(err.value))

    for _ in range(3):
        server.inject("status", 429, retry_after="1")
    with pytest.raises(BulkRateLimited) as limited:
        h.client.wait(h.client.kick_off())
    assert limited.value.status == 429


def test_failed_job_surfaces_its_operation_outcome_code_without_phi(make_server, harness, caplog):
    server = make_server(polls_before_done=0)
    server.fail_jobs(500, "exception")
    h = harness(server)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BulkExportFailed) as err:
        h.client.wait(h.client.kick_off(types=["Patient"]))
    assert (err.value.status, err.value.code) == (500, "exception")
    assert err.value.reason == "FHIR_BULK_EXPORT_FAILED"
    assert server.counts["status"] == 1  # a coded, non-transient failure is final: no retries
    _no_canary(str(err.value))
    _no_canary(caplog.text)


def test_unknown_group_and_type_are_refused_with_their_codes(make_server, harness):
    server = make_server()
    h = harness(server)
    with pytest.raises(BulkRequestRefused) as group:
        h.client.kick_off(group="no-such-group")
    assert (group.value.status, group.value.code) == (404, "not-found")
    with pytest.raises(BulkRequestRefused) as kind:
        h.client.kick_off(types=["Spaceship"])
    assert (kind.value.status, kind.value.code) == (400, "not-supported")
    _no_canary(str(group.value) + str(kind.value))


@given(st.text(), st.text())
def test_only_code_shaped_values_leave_an_operation_outcome(code, diagnostics):
    body = json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
        }
    ).encode()
    found = outcome_code(body)
    assert found is None or (found == code and safe_code(found) == found and len(found) <= 40)


# --- SMART Backend Services -------------------------------------------------------------------


@pytest.mark.parametrize("key_fixture", ["ec_key", "rsa_key"])
def test_client_assertion_follows_smart_backend_services(
    key_fixture, request, make_server, harness
):
    key = request.getfixturevalue(key_fixture)
    server = make_server()
    server.register_client(CLIENT_ID, public_jwk(key))
    h = harness(server, key=key)
    first, second = h.auth.client_assertion(), h.auth.client_assertion()
    header, claims = _jwt_parts(first)
    assert header == {
        "alg": "ES384" if key_fixture == "ec_key" else "RS384",
        "kid": public_jwk(key)["kid"],
        "typ": "JWT",
    }
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == server.token_url
    assert 0 < claims["exp"] - time.time() <= 300
    assert claims["jti"] != _jwt_parts(second)[1]["jti"]
    # The server verifies the signature against the registered JWK and grants the token.
    assert h.auth.access_token()
    assert server.state.scopes == ["system/*.read"]


def test_assertion_signed_with_an_unregistered_key_is_refused(make_server, harness, ec_key):
    server = make_server()
    impostor = ec.generate_private_key(ec.SECP384R1())
    h = harness(server, key=impostor)
    h.auth.kid = public_jwk(ec_key)["kid"]  # claims the registered key id, signs with another
    with pytest.raises(BulkAuthError) as err:
        h.client.kick_off()
    assert (err.value.status, err.value.code) == (401, "invalid_client")
    assert server.counts["kickoff"] == 0


def test_expired_assertion_is_refused(make_server, harness):
    server = make_server()
    h = harness(server, clock=lambda: time.time() - 3600)
    with pytest.raises(BulkAuthError) as err:
        h.auth.access_token()
    assert err.value.code == "invalid_client"


def test_access_token_is_cached_until_it_nears_expiry(make_server, harness):
    now = [time.time()]
    server = make_server(polls_before_done=3, token_lifetime=60)
    h = harness(server, clock=lambda: now[0])

    def tick(progress) -> None:
        now[0] += 20  # 20 s per poll: the 60 s token is renewed once 30 s remain

    h.client.wait(h.client.kick_off(types=["Patient"]), on_progress=tick)
    assert server.counts["token"] == h.auth.tokens_fetched == 2
    assert server.counts["status"] == 4


def test_token_revoked_early_is_renewed_after_a_401(make_server, harness):
    server = make_server(polls_before_done=2)
    h = harness(server)
    h.client.wait(
        h.client.kick_off(types=["Patient"]), on_progress=lambda p: server.expire_tokens()
    )
    assert server.counts["token"] == 3  # initial + one renewal per revocation
    assert server.counts["status"] == 5  # 3 answered polls + 2 refused with 401


def test_files_that_need_no_token_are_fetched_without_it(make_server, harness, tmp_path):
    server = make_server(polls_before_done=0, requires_access_token=False)
    h = harness(server)
    result = run_export(h.client, tmp_path, types=["Patient"])
    assert len(result.files) == 1 and server.counts["file_with_token"] == 0


def test_the_token_is_never_sent_to_another_host(make_server, harness, tmp_path):
    server = make_server()
    h = harness(server)
    elsewhere = ManifestFile("output", "Patient", "https://files.example.org/p.ndjson", 1)
    manifest = Manifest("2024-01-01T00:00:00Z", "", True, (elsewhere,))
    with pytest.raises(BulkProtocolError):
        h.client.download(manifest, str(tmp_path))
    assert server.counts["token"] == 0


# --- transport security -----------------------------------------------------------------------


def test_plain_http_is_refused_everywhere(make_server, harness, ec_key):
    transport = Transport()
    with pytest.raises(ValueError, match="https"):
        BulkDataClient("http://127.0.0.1:8080/fhir", transport)
    with pytest.raises(ValueError, match="https"):
        BackendServicesAuth(CLIENT_ID, "http://127.0.0.1/token", ec_key, transport)
    with pytest.raises(BulkProtocolError):
        parse_manifest(
            {
                "transactionTime": "2024-01-01T00:00:00Z",
                "requiresAccessToken": True,
                "output": [{"type": "Patient", "url": "http://127.0.0.1/p.ndjson"}],
            }
        )


def test_a_server_certificate_outside_the_trusted_ca_is_refused(make_server, ec_key):
    server = make_server()
    transport = Transport(sleep=lambda s: None)  # system trust store: the local CA is not in it
    client = BulkDataClient(
        server.base_url,
        transport,
        BackendServicesAuth(CLIENT_ID, server.token_url, ec_key, transport),
    )
    with pytest.raises(BulkTlsError):
        client.kick_off()
    assert server.counts["token"] == 0


# --- the command line -------------------------------------------------------------------------


def test_hub_bulk_export_downloads_and_ingests_with_counts_and_no_phi(
    make_server, tls, ec_key, bulk_dir, tmp_path, warehouse
):
    from cryptography.hazmat.primitives import serialization
    from typer.testing import CliRunner

    from pipelines.cli import app

    server = make_server(polls_before_done=0)
    key_file = tmp_path / "client-key.pem"
    key_file.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    args = ["bulk-export", "--base-url", server.base_url, "--client-id", CLIENT_ID]
    args += ["--key-file", str(key_file), "--token-url", server.token_url]
    args += ["--ca-file", str(tls.ca_cert_path), "--types", "Patient,Immunization"]
    args += ["--out", str(tmp_path / "out"), "--ingest", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    files = report["export"]["files"]
    assert [f["resource_type"] for f in files] == ["Patient", "Immunization"]
    assert report["export"]["deleted"] is True
    for row, downloaded in zip(report["ingest"], files, strict=True):
        assert row["uri"] == downloaded["uri"]
        assert row["read"] == row["loaded"] + row["quarantined"] == downloaded["lines"]
    patient = json.loads((bulk_dir / "Patient.000.ndjson").open().readline())
    for value in (patient["name"][0]["family"], patient["birthDate"]):
        assert value not in result.output

    server.fail_jobs(500, "exception")
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 1
    assert "FHIR_BULK_EXPORT_FAILED" in failed.output
    _no_canary(failed.output)


def test_files_can_be_streamed_to_a_smart_open_uri(make_server, harness, bulk_dir, tmp_path):
    server = make_server(polls_before_done=0)
    h = harness(server)
    result = run_export(h.client, (tmp_path / "remote").as_uri(), types=["Patient"])
    [downloaded] = result.files
    assert downloaded.uri.startswith("file://")
    landed = tmp_path / "remote" / "Patient.000.ndjson"
    assert _sha256(landed) == _sha256(bulk_dir / "Patient.000.ndjson") == downloaded.sha256
    assert len(list(read_fhir(downloaded.uri))) == downloaded.lines == 13


def test_a_download_cut_off_midway_is_fetched_again_and_no_partial_file_remains(
    make_server, harness, bulk_dir, tmp_path
):
    server = make_server(polls_before_done=0)
    server.drop_next_download()
    h = harness(server)
    result = run_export(h.client, tmp_path / "out", types=["Condition"])
    [downloaded] = result.files
    assert server.counts["file"] == 2 and len(h.sleeps) == 1
    assert downloaded.sha256 == _sha256(bulk_dir / "Condition.000.ndjson")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["Condition.000.ndjson"]

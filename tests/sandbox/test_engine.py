"""The SANDBOX engine over real TLS on loopback, driven with raw signed requests.

The signer here is written from docs/engine-api.md, independently of the adapter's, so the
contract (not shared code) is what these tests pin down.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509

from sandbox import SandboxEngine, ensure_local_ca

TOKEN = "test-token"
SECRET = "test-signing-secret"
FIXED_SEND = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
REPO = Path(__file__).resolve().parents[2]


class Client:
    """Minimal signed client: just enough HTTP to exercise the contract."""

    def __init__(self, engine: SandboxEngine, secret: str = SECRET, token: str = TOKEN) -> None:
        self.engine, self.secret, self.token = engine, secret, token
        self.session = requests.Session()
        self.session.trust_env = False

    def call(
        self,
        method: str,
        target: str,
        payload: Any = None,
        *,
        key: str | None = None,
        t: int | None = None,
        signed_body: bytes | None = None,
        signed_target: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        body = b"" if payload is None else json.dumps(payload).encode()
        stamp = int(time.time()) if t is None else t
        digest = hashlib.sha256(body if signed_body is None else signed_body).hexdigest()
        message = f"{stamp}.{method}.{signed_target or target}.{digest}"
        sig = hmac.new(self.secret.encode(), message.encode(), hashlib.sha256).hexdigest()
        sent = {"Authorization": f"Bearer {self.token}", "X-Hub-Signature": f"t={stamp},v1={sig}"}
        if key:
            sent["Idempotency-Key"] = key
        sent.update(headers or {})
        return self.session.request(
            method,
            self.engine.base_url + target,
            data=body,
            headers=sent,
            verify=str(self.engine.ca_cert_path),
            timeout=10,
        )

    def all_events(self, limit: int = 100) -> list[dict[str, Any]]:
        events, cursor = [], ""
        while True:
            page = self.call("GET", f"/v1/events?cursor={cursor}&limit={limit}").json()
            if not page["events"]:
                return events
            events.extend(page["events"])
            cursor = page["next_cursor"]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., SandboxEngine]]:
    engines: list[SandboxEngine] = []

    def _start(state: str = "state", **kwargs: Any) -> SandboxEngine:
        kwargs = {"token": TOKEN, "signing_secret": SECRET, **kwargs}
        engine = SandboxEngine(tmp_path / state, **kwargs)
        engine.start()
        engines.append(engine)
        return engine

    yield _start
    for engine in engines:
        engine.stop()


def members(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "external_id": f"tok_{i:04d}",
            "email": f"person{i}@example.org",
            "fields": {"first_name": f"Name{i}"},
        }
        for i in range(start, start + n)
    ]


def with_audience(engine: SandboxEngine, audience: str = "aud-1") -> Client:
    client = Client(engine)
    resp = client.call("PUT", f"/v1/audiences/{audience}", {"name": "A", "purpose": "outreach"})
    assert resp.status_code == 200, resp.text
    return client


# --- TLS ------------------------------------------------------------------------------------


def test_tls_material_is_private_reused_and_covers_loopback(tmp_path: Path) -> None:
    first = ensure_local_ca(tmp_path)
    for key in (first.key_path, tmp_path / "sandbox-ca.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    ca_pem = first.ca_cert_path.read_bytes()
    cert_pem = first.cert_path.read_bytes()

    assert ensure_local_ca(tmp_path) == first
    assert first.cert_path.read_bytes() == cert_pem  # valid material is reused, not reissued

    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert "SANDBOX" in x509.load_pem_x509_certificate(ca_pem).subject.rfc4514_string()

    first.cert_path.write_text("garbage")  # a broken server cert is reissued by the same CA
    ensure_local_ca(tmp_path)
    assert first.ca_cert_path.read_bytes() == ca_pem
    x509.load_pem_x509_certificate(first.cert_path.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(ca_pem)
    )


def test_default_trust_store_refuses_the_sandbox(start: Callable[..., SandboxEngine]) -> None:
    engine = start()
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(engine.base_url + "/v1/health", verify=True, timeout=5)
    ok = requests.get(engine.base_url + "/v1/health", verify=str(engine.ca_cert_path), timeout=5)
    assert ok.json() == {"status": "ok", "sandbox": True}


def test_non_loopback_bind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SandboxEngine(tmp_path, host="0.0.0.0", token=TOKEN, signing_secret=SECRET)


# --- members and idempotency ----------------------------------------------------------------


def test_upsert_lists_members_and_labels_sandbox(start: Callable[..., SandboxEngine]) -> None:
    client = with_audience(start())
    batch = [*members(10), {"external_id": "tok_bad", "email": "not-an-address"}]
    resp = client.call(
        "POST", "/v1/audiences/aud-1/members:batchUpsert", {"members": batch}, key="k1"
    )

    assert resp.status_code == 200
    assert "SANDBOX" in resp.headers["Server"] and resp.headers["X-Sandbox"] == "true"
    body = resp.json()
    assert body["sandbox"] is True
    assert body["results"][:10] == [
        {"external_id": m["external_id"], "status": "ok", "error_code": None} for m in batch[:10]
    ]
    assert body["results"][10] == {
        "external_id": "tok_bad",
        "status": "rejected",
        "error_code": "ENGINE_REJECTED",
    }
    listed = client.call("GET", "/v1/audiences/aud-1/members?limit=4")
    ids, cursor = listed.json()["external_ids"], listed.json()["next_cursor"]
    while cursor:
        page = client.call("GET", f"/v1/audiences/aud-1/members?limit=4&cursor={cursor}").json()
        ids, cursor = ids + page["external_ids"], page["next_cursor"]
    assert ids == [m["external_id"] for m in batch[:10]]


def test_idempotent_replay_and_conflict(start: Callable[..., SandboxEngine]) -> None:
    client = with_audience(start())
    path = "/v1/audiences/aud-1/members:batchUpsert"
    first = client.call("POST", path, {"members": members(10)}, key="batch-1")
    events_before = client.all_events()

    replay = client.call("POST", path, {"members": members(10)}, key="batch-1")
    assert replay.status_code == 200
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == first.json()
    assert client.all_events() == events_before  # nothing re-applied, no new sends

    other = client.call("POST", path, {"members": members(3, start=50)}, key="batch-1")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    missing = client.call("POST", path, {"members": members(1)})
    assert missing.status_code == 400


def test_concurrent_requests_with_one_key_apply_once(
    start: Callable[..., SandboxEngine],
) -> None:
    engine = start()
    with_audience(engine)
    path = "/v1/audiences/aud-1/members:batchUpsert"

    def send(_: int) -> requests.Response:
        return Client(engine).call("POST", path, {"members": members(5)}, key="race")

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(send, range(6)))
    assert {r.status_code for r in answers} == {200}
    applied = [r for r in answers if r.headers.get("Idempotent-Replayed") != "true"]
    assert len(applied) == 1
    sent = [e for e in Client(engine).all_events() if e["type"] == "sent"]
    assert len(sent) == 5


def test_batch_limit(start: Callable[..., SandboxEngine]) -> None:
    client = with_audience(start())
    path = "/v1/audiences/aud-1/members:batchUpsert"
    assert client.call("POST", path, {"members": members(1001)}, key="big").status_code == 413
    assert client.call("POST", path, {"members": members(1000)}, key="max").status_code == 200


def test_remove_and_readd_does_not_resend(start: Callable[..., SandboxEngine]) -> None:
    client = with_audience(start())
    client.call(
        "POST", "/v1/audiences/aud-1/members:batchUpsert", {"members": members(5)}, key="u1"
    )
    gone = client.call(
        "POST",
        "/v1/audiences/aud-1/members:batchRemove",
        {"external_ids": ["tok_0001", "tok_0003", "never-a-member"]},
        key="r1",
    )
    assert [r["status"] for r in gone.json()["results"]] == ["ok", "ok", "ok"]
    listed = client.call("GET", "/v1/audiences/aud-1/members").json()["external_ids"]
    assert listed == ["tok_0000", "tok_0002", "tok_0004"]

    sent_before = [e for e in client.all_events() if e["type"] == "sent"]
    client.call(
        "POST", "/v1/audiences/aud-1/members:batchUpsert", {"members": members(5)}, key="u2"
    )
    assert len(client.call("GET", "/v1/audiences/aud-1/members").json()["external_ids"]) == 5
    assert [e for e in client.all_events() if e["type"] == "sent"] == sent_before


# --- auth ----------------------------------------------------------------------------------


def test_auth_failures_are_401(start: Callable[..., SandboxEngine]) -> None:
    engine = start()
    client = with_audience(engine)
    target = "/v1/events?limit=5"
    assert client.call("GET", target).status_code == 200

    def code(resp: requests.Response) -> tuple[int, str]:
        return resp.status_code, resp.json()["error"]["code"]

    assert code(Client(engine, secret="wrong").call("GET", target)) == (401, "AUTH_BAD_SIGNATURE")
    assert code(Client(engine, token="wrong").call("GET", target)) == (401, "AUTH_BAD_TOKEN")
    stale = client.call("GET", target, t=int(time.time()) - 301)
    assert code(stale) == (401, "AUTH_STALE_TIMESTAMP")
    future = client.call("GET", target, t=int(time.time()) + 301)
    assert code(future) == (401, "AUTH_STALE_TIMESTAMP")
    # The signature binds the body and the query: tampering with either is caught.
    tampered = client.call(
        "PUT", "/v1/audiences/aud-1", {"name": "B", "purpose": "x"}, signed_body=b"{}"
    )
    assert code(tampered) == (401, "AUTH_BAD_SIGNATURE")
    requery = client.call("GET", "/v1/events?limit=50", signed_target=target)
    assert code(requery) == (401, "AUTH_BAD_SIGNATURE")
    bare = requests.get(engine.base_url + target, verify=str(engine.ca_cert_path), timeout=5)
    assert code(bare) == (401, "AUTH_MISSING")
    no_sig = client.call("GET", target, headers={"X-Hub-Signature": "v1=abc"})
    assert code(no_sig) == (401, "AUTH_BAD_SIGNATURE")


# --- events --------------------------------------------------------------------------------


def seeded_events(start: Callable[..., SandboxEngine], state: str, seed: int) -> list[dict]:
    engine = start(state, seed=seed, clock=lambda: FIXED_SEND)
    client = with_audience(engine)
    path = "/v1/audiences/aud-1/members:batchUpsert"
    client.call("POST", path, {"members": members(60)}, key="seeded")
    return client.all_events(limit=1000)


def test_events_are_deterministic_for_a_seed(start: Callable[..., SandboxEngine]) -> None:
    everything = seeded_events(start, "a", seed=7)
    assert len({e["event_id"] for e in everything}) == len(everything)
    assert sum(e["type"] == "sent" for e in everything) == 60

    same = seeded_events(start, "b", seed=7)
    assert same == everything  # same seed, same send time: byte-for-byte the same stream
    assert seeded_events(start, "c", seed=8) != everything


def test_cursor_paging_has_no_duplicates_or_gaps(start: Callable[..., SandboxEngine]) -> None:
    engine = start(seed=7, clock=lambda: FIXED_SEND)
    client = with_audience(engine)
    client.call(
        "POST", "/v1/audiences/aud-1/members:batchUpsert", {"members": members(25)}, key="p1"
    )
    everything = client.call("GET", "/v1/events?limit=1000").json()["events"]
    paged = client.all_events(limit=7)
    assert paged == everything

    tail = client.call("GET", "/v1/events?limit=1000").json()["next_cursor"]
    empty = client.call("GET", f"/v1/events?cursor={tail}&limit=10").json()
    assert empty["events"] == [] and empty["next_cursor"] == tail  # poll again from here
    client.call(
        "POST", "/v1/audiences/aud-1/members:batchUpsert", {"members": members(2, 90)}, key="p2"
    )
    fresh = client.call("GET", f"/v1/events?cursor={tail}&limit=1000").json()["events"]
    assert {e["external_id"] for e in fresh} == {"tok_0090", "tok_0091"}
    bad = client.call("GET", "/v1/events?cursor=not-a-cursor")
    assert bad.status_code == 400


def test_event_pages_go_up_to_fifty_thousand(start: Callable[..., SandboxEngine]) -> None:
    # Events are read in bulk (member listings stay capped at 1000 per page).
    engine = start(seed=7, clock=lambda: FIXED_SEND)
    client = with_audience(engine)
    client.call(
        "POST", "/v1/audiences/aud-1/members:batchUpsert", {"members": members(5)}, key="p1"
    )
    big = client.call("GET", "/v1/events?limit=50000")
    assert big.status_code == 200
    assert big.json()["events"] == client.all_events(limit=3)
    assert client.call("GET", "/v1/events?limit=50001").status_code == 400
    assert client.call("GET", "/v1/audiences/aud-1/members?limit=1001").status_code == 400


def test_event_shape_and_no_email(start: Callable[..., SandboxEngine]) -> None:
    engine = start(seed=7)
    client = with_audience(engine)
    batch = members(200)
    client.call("POST", "/v1/audiences/aud-1/members:batchUpsert", {"members": batch}, key="e1")
    raw = client.call("GET", "/v1/events?limit=1000")
    assert "@" not in raw.text
    for m in batch:
        assert m["email"] not in raw.text
    events = raw.json()["events"]
    kinds = {e["type"] for e in events}
    assert {"sent", "delivered", "open", "click", "bounce"} <= kinds
    for e in events:
        assert set(e) == {
            "event_id", "type", "external_id", "audience_id", "occurred_at",
            "machine_open", "bounce_type", "url",
        }  # fmt: skip
        assert e["occurred_at"].endswith("Z")
        assert (e["url"] is not None) == (e["type"] == "click")
        assert (e["bounce_type"] is not None) == (e["type"] == "bounce")
        assert not e["machine_open"] or e["type"] == "open"
    assert any(e["machine_open"] for e in events)
    hard = {e["external_id"] for e in events if e["bounce_type"] == "hard"}
    delivered = {e["external_id"] for e in events if e["type"] == "delivered"}
    assert hard and not hard & delivered  # a hard bounce replaces delivery


def test_state_survives_restart(tmp_path: Path) -> None:
    engine = SandboxEngine(tmp_path, token=TOKEN, signing_secret=SECRET)
    with engine:
        client = with_audience(engine)
        client.call(
            "POST", "/v1/audiences/aud-1/members:batchUpsert", {"members": members(4)}, key="s1"
        )
        before = client.call("GET", "/v1/events?limit=3").json()
    with SandboxEngine(tmp_path, token=TOKEN, signing_secret=SECRET) as again:
        client = Client(again)
        assert len(client.call("GET", "/v1/audiences/aud-1/members").json()["external_ids"]) == 4
        rest = client.call("GET", f"/v1/events?cursor={before['next_cursor']}").json()["events"]
        assert before["events"] + rest == client.all_events()
        replay = client.call(
            "POST", "/v1/audiences/aud-1/members:batchUpsert", {"members": members(4)}, key="s1"
        )
        assert replay.headers.get("Idempotent-Replayed") == "true"


# --- faults --------------------------------------------------------------------------------


def test_fault_injection_and_rate_limit(start: Callable[..., SandboxEngine]) -> None:
    flaky = start("flaky", fail_rate=0.5, seed=3)
    statuses = [Client(flaky).call("GET", "/v1/events").status_code for _ in range(20)]
    assert set(statuses) == {200, 503}

    # 4 requests well within a second span at most two 1-s windows: at most 2 get through.
    limited = Client(start("limited", rate_limit=1))
    answers = [limited.call("GET", "/v1/events") for _ in range(4)]
    throttled = [r for r in answers if r.status_code == 429]
    assert throttled, [r.status_code for r in answers]
    assert int(throttled[0].headers["Retry-After"]) >= 1


# --- process mode --------------------------------------------------------------------------


def test_runs_as_a_process(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SANDBOX_ENGINE_TOKEN": TOKEN,
        "SANDBOX_ENGINE_SIGNING_SECRET": SECRET,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--state-dir", str(tmp_path), "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "SANDBOX" in banner
        base_url = banner.split()[-1]
        endpoint = json.loads((tmp_path / "endpoint.json").read_text())
        assert endpoint["base_url"] == base_url and endpoint["sandbox"] is True
        health = requests.get(f"{base_url}/v1/health", verify=endpoint["ca_cert"], timeout=5)
        assert health.json()["sandbox"] is True
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert not (tmp_path / "endpoint.json").exists()

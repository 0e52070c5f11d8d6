"""The webhook receiver over HTTPS: signed deliveries are spooled before the 2xx and applied
to engagement.* once; tampered, stale and replayed deliveries are refused; the SANDBOX engine
delivers its events as signed webhooks and retries until the receiver takes them."""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.email.base import Member
from connectors.email.https_server import Response
from connectors.email.signing import signature_header
from sandbox import SandboxEngine
from sandbox.tls import ensure_local_ca
from services.webhooks import WebhookService, WebhookSettings
from tests.services.conftest import SECRET, TOKEN, client

HOOK_SECRET = "whsec-test"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())


def hub_event(i: int, kind: str = "open", **extra) -> dict:
    return {
        "event_id": f"evt-{kind}-{i}",
        "type": kind,
        "external_id": f"p{i:06d}",
        "audience_id": "flu",
        "occurred_at": "2026-03-01T09:00:00.000Z",
        "machine_open": False,
        "bounce_type": None,
        "url": None,
        **extra,
    }


@pytest.fixture
def conn(sync_db) -> Iterator[psycopg.Connection]:
    with sync_db.connect() as conn:
        conn.execute("truncate engagement.events, engagement.suppressions")
        conn.commit()
        yield conn


@pytest.fixture
def service(sync_db, tmp_path: Path) -> Iterator[WebhookService]:
    tls = ensure_local_ca(tmp_path / "tls")
    public = SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = WebhookSettings(
        destination="sandbox",
        hub_secrets=[HOOK_SECRET],
        sendgrid_public_key=base64.b64encode(public).decode(),
    )
    svc = WebhookService(
        settings, tmp_path / "spool", sync_db.connect, str(tls.cert_path), str(tls.key_path)
    )
    svc.ca_file = str(tls.ca_cert_path)  # type: ignore[attr-defined]
    with svc:
        yield svc


def post_hub(service, body: bytes, *, t: int | None = None, sign_body: bytes | None = None):
    target = "/webhooks/hub"
    header = signature_header(HOOK_SECRET, "POST", target, sign_body or body, t or int(time.time()))
    return requests.post(
        service.base_url + target,
        data=body,
        headers={"X-Hub-Signature": header, "Content-Type": "application/json"},
        verify=service.ca_file,
        timeout=5,
    )


def rows(conn, sql: str) -> list[tuple]:
    conn.commit()
    return conn.execute(sql).fetchall()


def test_a_signed_delivery_is_spooled_before_the_answer_then_applied_once(service, conn):
    events = [hub_event(1), hub_event(2, "unsubscribe"), hub_event(3, "bounce", bounce_type="hard")]
    body = orjson.dumps({"events": events, "sandbox": True})
    answer = post_hub(service, body)
    assert answer.status_code == 200 and answer.json() == {"accepted": 3, "unmapped": 0}
    service.drain()
    assert rows(conn, "select event_id from engagement.events order by 1") == [
        ("evt-bounce-3",),
        ("evt-open-1",),
        ("evt-unsubscribe-2",),
    ]
    suppressed = "select person_token, event_type from engagement.suppressions order by 1"
    assert rows(conn, suppressed) == [
        ("p000002", "unsubscribe"),
        ("p000003", "hard_bounce"),
    ]
    # The sender retries (a lost answer): signed afresh, accepted, but counted once.
    time.sleep(1.01)
    assert post_hub(service, body).status_code == 200
    service.drain()
    assert rows(conn, "select count(*) from engagement.events") == [(3,)]
    assert list(service.spool.pending()) == []


def test_the_spool_is_applied_durably_before_its_file_is_removed(service, sync_db, conn):
    from services.webhooks import apply_spool

    assert post_hub(service, orjson.dumps({"events": [hub_event(21)]})).status_code == 200
    with service._apply_lock, sync_db.connect() as applying:
        apply_spool(applying, service.spool, "sandbox")
        assert list(service.spool.pending()) == []
        # Seen from another session while the applying one is still open: committed.
        assert rows(conn, "select event_id from engagement.events") == [("evt-open-21",)]


def test_a_tampered_webhook_is_refused_and_nothing_is_kept(service, conn):
    signed = orjson.dumps({"events": [hub_event(1)]})
    forged = orjson.dumps({"events": [hub_event(1, "unsubscribe")]})
    answer = post_hub(service, forged, sign_body=signed)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "WEBHOOK_BAD_SIGNATURE"
    unsigned = requests.post(
        service.base_url + "/webhooks/hub", data=signed, verify=service.ca_file, timeout=5
    )
    assert unsigned.status_code == 401
    assert list(service.spool.pending()) == []
    service.drain()
    assert rows(conn, "select count(*) from engagement.events") == [(0,)]


def test_a_replayed_or_stale_webhook_is_refused(service, conn):
    body = orjson.dumps({"events": [hub_event(7, "complaint")]})
    t = int(time.time())
    assert post_hub(service, body, t=t).status_code == 200
    replay = post_hub(service, body, t=t)  # the captured request, sent again as is
    assert replay.status_code == 409 and replay.json()["error"]["code"] == "WEBHOOK_REPLAYED"
    stale = post_hub(service, body, t=t - 301)
    assert stale.status_code == 401 and stale.json()["error"]["code"] == "WEBHOOK_STALE"
    service.drain()
    assert rows(conn, "select count(*) from engagement.suppressions") == [(1,)]


def test_a_sendgrid_signed_batch_is_accepted_and_mapped(service, conn):
    batch = [
        {"email": "person1@example.org", "timestamp": 1772355600, "event": "open",
         "sg_event_id": "sg-a", "sg_machine_open": True, "external_id": "p000001"},
        {"email": "person2@example.org", "timestamp": 1772355601, "event": "spamreport",
         "sg_event_id": "sg-b", "external_id": "p000002"},
    ]  # fmt: skip
    body = orjson.dumps(batch)
    timestamp = str(int(time.time()))
    signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }
    url = service.base_url + "/webhooks/sendgrid"
    assert requests.post(url, data=body, headers=headers, verify=service.ca_file).ok
    bad = requests.post(url, data=body[:-1] + b" ]", headers=headers, verify=service.ca_file)
    assert bad.status_code == 401
    service.drain()
    assert rows(conn, "select event_id, event_type, machine_open from engagement.events") == [
        ("sg:sg-a", "open", True),
        ("sg:sg-b", "complaint", False),
    ]
    spooled = "".join(p.read_text() for p in Path(service.spool.folder).glob("*"))
    assert "@" not in spooled


def test_the_sandbox_delivers_signed_webhooks_and_retries_until_taken(service, conn, tmp_path):
    inner = service.server._server.handler
    refused = {"count": 0}

    def flaky(request):  # the receiver is "down" for the first deliveries
        if refused["count"] < 2:
            refused["count"] += 1
            return Response(503, b"{}")
        return inner(request)

    service.server._server.handler = flaky
    engine = SandboxEngine(
        tmp_path / "engine",
        token=TOKEN,
        signing_secret=SECRET,
        webhook_url=service.base_url + "/webhooks/hub",
        webhook_secret=HOOK_SECRET,
        webhook_ca_file=service.ca_file,
        clock=lambda: dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC),
    )
    with engine:
        engine.webhooks.backoff_base = 0.01
        api = client(engine)
        api.ensure_audience("flu", "flu", "treatment")
        members = [Member(f"p{i:06d}", f"person{i}@example.org", {}) for i in range(50)]
        api.upsert("flu", members, "k1")
        deadline = time.monotonic() + 30
        while engine.webhooks.backlog() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.webhooks.backlog() == 0
        page = api.events(None, 1000)
        stream = [e.event_id for e in page.events]
    service.drain()
    assert refused["count"] == 2
    stored = {r[0] for r in rows(conn, "select event_id from engagement.events")}
    assert stored == set(stream) and len(stream) > 50

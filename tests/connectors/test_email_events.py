"""Event readers (hub/sandbox, SendGrid, Amazon SES via SNS or Firehose) and the webhook
signature checks (HMAC, ECDSA, SNS RSA) they rely on."""

from __future__ import annotations

import base64
import datetime as dt
import time

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from connectors.email.events import (
    EventShapeError,
    hub_batch,
    looks_like_machine_open,
    sendgrid_batch,
    ses_firehose_lines,
    ses_sns_notification,
)
from connectors.email.signing import signature_header
from connectors.email.webhook_auth import (
    WebhookRejected,
    sns_string_to_sign,
    verify_hub,
    verify_sendgrid,
    verify_sns,
)

SENDGRID_BATCH = [
    {"email": "person1@example.org", "timestamp": 1772355600, "event": "processed",
     "sg_event_id": "sg-1", "external_id": "p000001", "audience_id": "flu"},
    {"email": "person1@example.org", "timestamp": 1772355610, "event": "delivered",
     "sg_event_id": "sg-2", "external_id": "p000001", "audience_id": "flu"},
    {"email": "person1@example.org", "timestamp": 1772355611, "event": "open",
     "sg_event_id": "sg-3", "sg_machine_open": True, "external_id": "p000001"},
    {"email": "person1@example.org", "timestamp": 1772359200, "event": "open",
     "sg_event_id": "sg-4", "sg_machine_open": False, "external_id": "p000001"},
    {"email": "person1@example.org", "timestamp": 1772359260, "event": "click",
     "url": "https://clinic.example/a", "sg_event_id": "sg-5", "external_id": "p000001"},
    {"email": "person2@example.org", "timestamp": 1772355615, "event": "bounce",
     "type": "bounce", "sg_event_id": "sg-6", "external_id": "p000002"},
    {"email": "person3@example.org", "timestamp": 1772355615, "event": "bounce",
     "type": "blocked", "sg_event_id": "sg-7", "external_id": "p000003"},
    {"email": "person4@example.org", "timestamp": 1772355700, "event": "dropped",
     "sg_event_id": "sg-8", "external_id": "p000004"},
    {"email": "person1@example.org", "timestamp": 1772360000, "event": "spamreport",
     "sg_event_id": "sg-9", "external_id": "p000001"},
    {"email": "person5@example.org", "timestamp": 1772360001, "event": "unsubscribe",
     "sg_event_id": "sg-10", "external_id": "p000005"},
    {"email": "person6@example.org", "timestamp": 1772360002, "event": "group_unsubscribe",
     "asm_group_id": 7, "sg_event_id": "sg-11", "external_id": "p000006"},
    {"email": "nobody@example.org", "timestamp": 1772360003, "event": "open",
     "sg_event_id": "sg-12"},
]  # fmt: skip


def ses(event_type: str, detail_key: str | None, detail: dict, tags: dict | None = None) -> dict:
    record = {
        "eventType": event_type,
        "mail": {
            "timestamp": "2026-03-01T09:00:00.000Z",
            "messageId": "0100018e-aaaa",
            "destination": ["person1@example.org"],
            "tags": {"external_id": ["p000001"], "audience_id": ["flu"]} if tags is None else tags,
        },
    }
    if detail_key:
        record[detail_key] = detail
    return record


SES_RECORDS = [
    ses("Send", "send", {}),
    ses("Delivery", "delivery", {"timestamp": "2026-03-01T09:00:02.000Z"}),
    ses("Open", "open", {"timestamp": "2026-03-01T09:00:03Z", "userAgent": "Mozilla/5.0"}),
    ses(
        "Open",
        "open",
        {
            "timestamp": "2026-03-01T12:00:00Z",
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) Mobile/15E148",
        },
    ),
    ses("Click", "click", {"timestamp": "2026-03-01T12:01:00Z", "link": "https://c.example/a"}),
    ses(
        "Bounce",
        "bounce",
        {
            "bounceType": "Permanent",
            "timestamp": "2026-03-01T09:00:01Z",
            "bouncedRecipients": [{"emailAddress": "person1@example.org"}],
        },
    ),
    ses("Bounce", "bounce", {"bounceType": "Transient", "timestamp": "2026-03-01T09:00:01Z"}),
    ses("Complaint", "complaint", {"timestamp": "2026-03-02T10:00:00Z"}),
    ses(
        "Subscription",
        "subscription",
        {"timestamp": "2026-03-02T11:00:00Z", "newTopicPreferences": {"unsubscribeAll": True}},
    ),
    ses(
        "Subscription",
        "subscription",
        {"timestamp": "2026-03-02T11:00:00Z", "newTopicPreferences": {"unsubscribeAll": False}},
    ),
    ses("Rendering Failure", "failure", {}),
    ses("Send", "send", {}, tags={}),
]


def test_sendgrid_batch_maps_types_flags_machine_opens_and_never_keys_on_email():
    parsed = sendgrid_batch(orjson.dumps(SENDGRID_BATCH))
    assert parsed.unmapped == 1
    got = [
        (e.event_id, e.type, e.external_id, e.machine_open, e.bounce_type) for e in parsed.events
    ]
    assert got == [
        ("sg:sg-1", "sent", "p000001", False, None),
        ("sg:sg-2", "delivered", "p000001", False, None),
        ("sg:sg-3", "open", "p000001", True, None),
        ("sg:sg-4", "open", "p000001", False, None),
        ("sg:sg-5", "click", "p000001", False, None),
        ("sg:sg-6", "bounce", "p000002", False, "hard"),
        ("sg:sg-7", "bounce", "p000003", False, "soft"),
        ("sg:sg-8", "dropped", "p000004", False, None),
        ("sg:sg-9", "complaint", "p000001", False, None),
        ("sg:sg-10", "unsubscribe", "p000005", False, None),
        ("sg:sg-11", "unsubscribe", "p000006", False, None),
    ]
    assert parsed.events[0].occurred_at == dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    assert "@" not in repr(parsed.events)


def test_ses_records_as_sns_notifications_and_firehose_lines():
    via_sns = []
    for record in SES_RECORDS:
        envelope = {"Type": "Notification", "Message": orjson.dumps(record).decode()}
        via_sns.append(ses_sns_notification(orjson.dumps(envelope)))
    lines = [orjson.dumps(r) for r in SES_RECORDS]
    via_firehose = list(ses_firehose_lines([*lines[:3], b"", *lines[3:]]))
    for parsed_list in (via_sns, via_firehose):
        events = [e for p in parsed_list for e in p.events]
        got = [(e.type, e.machine_open, e.bounce_type) for e in events]
        assert got == [
            ("sent", False, None),
            ("delivered", False, None),
            ("open", True, None),  # a bare agent: Apple Mail privacy prefetch
            ("open", False, None),
            ("click", False, None),
            ("bounce", False, "hard"),
            ("bounce", False, "soft"),
            ("complaint", False, None),
            ("unsubscribe", False, None),
        ]
        assert {e.external_id for e in events} == {"p000001"}
        assert sum(p.skipped for p in parsed_list) == 2  # still subscribed; rendering failure
        assert sum(p.unmapped for p in parsed_list) == 1
        assert len({e.event_id for e in events}) == len(events)
    # The same record delivered twice gets the same id (idempotent downstream).
    assert via_sns[0].events[0].event_id == via_firehose[0].events[0].event_id


def test_hub_batch_and_shape_errors():
    body = {
        "events": [
            {"event_id": "e1", "type": "open", "external_id": "p1", "audience_id": "flu",
             "occurred_at": "2026-03-01T09:00:00.000Z", "machine_open": True,
             "bounce_type": None, "url": None},
            {"event_id": "e2", "type": "open", "external_id": "", "audience_id": "flu",
             "occurred_at": "2026-03-01T09:00:00.000Z"},
        ]
    }  # fmt: skip
    parsed = hub_batch(orjson.dumps(body))
    assert [e.event_id for e in parsed.events] == ["e1"] and parsed.unmapped == 1
    no_time = b'{"events": [{"event_id": "x", "external_id": "p1"}]}'
    for bad in (b"not json", b'{"events": 3}', no_time):
        with pytest.raises(EventShapeError):
            hub_batch(bad)
    with pytest.raises(EventShapeError):
        sendgrid_batch(b'{"event": "open"}')


@pytest.mark.parametrize(
    ("agent", "machine"),
    [
        ("Mozilla/5.0", True),
        ("Mozilla/5.0 (Windows NT 5.1) Firefox/11.0 (via ggpht.com GoogleImageProxy)", True),
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", True),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML)", False),
        (None, True),
    ],
)  # fmt: skip
def test_machine_open_heuristic(agent, machine):
    assert looks_like_machine_open(agent) is machine


# --- signatures ---------------------------------------------------------------------------


def test_hub_signature_accepts_fresh_and_rejects_tampered_stale_and_wrong_secret():
    body, now = b'{"events": []}', time.time()
    header = signature_header("s3cret", "POST", "/webhooks/hub", body, int(now))
    key = verify_hub({"X-Hub-Signature": header}, "/webhooks/hub", body, ["old", "s3cret"], now)
    assert key.startswith("hub:")
    with pytest.raises(WebhookRejected) as tampered:
        verify_hub({"X-Hub-Signature": header}, "/webhooks/hub", body + b" ", ["s3cret"], now)
    assert tampered.value.code == "WEBHOOK_BAD_SIGNATURE"
    with pytest.raises(WebhookRejected) as stale:
        verify_hub({"X-Hub-Signature": header}, "/webhooks/hub", body, ["s3cret"], now + 301)
    assert stale.value.code == "WEBHOOK_STALE"
    with pytest.raises(WebhookRejected):
        verify_hub({"X-Hub-Signature": header}, "/webhooks/hub", body, ["other"], now)
    with pytest.raises(WebhookRejected):
        verify_hub({}, "/webhooks/hub", body, ["s3cret"], now)


def test_sendgrid_ecdsa_signature():
    private = ec.generate_private_key(ec.SECP256R1())
    public_b64 = base64.b64encode(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    body, now = orjson.dumps(SENDGRID_BATCH), time.time()
    timestamp = str(int(now))
    signature = base64.b64encode(
        private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }
    assert verify_sendgrid(headers, body, public_b64, now).startswith("sendgrid:")
    with pytest.raises(WebhookRejected):
        verify_sendgrid(headers, body.replace(b"p000002", b"p000009"), public_b64, now)
    with pytest.raises(WebhookRejected) as stale:
        verify_sendgrid(headers, body, public_b64, now + 3600)
    assert stale.value.code == "WEBHOOK_STALE"


def sns_signer() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def signed_sns(key: rsa.RSAPrivateKey, record: dict, version: str = "2") -> dict:
    envelope = {
        "Type": "Notification",
        "MessageId": "msg-1",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Message": orjson.dumps(record).decode(),
        "Timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "SignatureVersion": version,
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    }
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = key.sign(sns_string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    envelope["Signature"] = base64.b64encode(signature).decode()
    return envelope


def test_sns_signature_with_a_pinned_certificate():
    key, cert = sns_signer()
    pinned = {"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem": cert}
    for version in ("1", "2"):
        envelope = signed_sns(key, SES_RECORDS[0], version)
        assert verify_sns(envelope, pinned, time.time()) == "sns:msg-1"
    tampered = {**envelope, "Message": envelope["Message"].replace("p000001", "p000002")}
    with pytest.raises(WebhookRejected):
        verify_sns(tampered, pinned, time.time())
    elsewhere = {**envelope, "SigningCertURL": "https://attacker.example/cert.pem"}
    with pytest.raises(WebhookRejected, match="SNS https URL"):
        verify_sns(elsewhere, pinned, time.time())
    with pytest.raises(WebhookRejected, match="pinned"):
        verify_sns(envelope, {}, time.time())

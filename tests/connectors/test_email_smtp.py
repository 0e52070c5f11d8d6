"""The SMTP relay adapter against a real aiosmtpd relay on loopback (STARTTLS, AUTH), with
DKIM, one-click unsubscribe, tracking over HTTPS and DSN bounces."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import dkim
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.email import EngineTlsError, Member
from connectors.email.https_server import HttpsServer
from connectors.email.smtp import DkimSettings, MessageTemplate, SmtpEngine
from connectors.email.smtp_transport import RelaySettings
from connectors.email.tracking import TokenSigner, TrackingEndpoint
from sandbox.smtp_sink import SmtpSink
from sandbox.tls import TlsMaterial, ensure_local_ca

SECRET = b"t" * 32
USERS = {"hub-relay": "relay-password"}
TEMPLATES = {
    "flu": MessageTemplate(
        subject="Time for your flu shot, {given_name}",
        text="Hello {given_name}, book at {link0}",
        html="<p>Hello {given_name}, <a href='{link0}'>book now</a></p>",
        links=("https://clinic.example/book?campaign=flu",),
    ),
    "results": MessageTemplate(
        subject="Your lab results",
        text="Hello {given_name}, your HbA1c result is ready: 6.1 %",
        carries_phi=True,
    ),
}
URL = re.compile(r"https?://[^\s\"'<>]+")


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tls(tmp_path: Path) -> TlsMaterial:
    return ensure_local_ca(tmp_path / "tls")


@pytest.fixture
def relay(tls: TlsMaterial) -> Iterator[SmtpSink]:
    with SmtpSink(tls, users=USERS) as sink:
        yield sink


@pytest.fixture
def dkim_key() -> tuple[DkimSettings, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    return DkimSettings("clinic.example", "hub2026", pem), record


def engine_for(
    tmp_path: Path,
    sink_port: int,
    tls: TlsMaterial,
    clock: Clock,
    tracking_url: str = "https://127.0.0.1:1",
    **kwargs,
) -> SmtpEngine:
    options = {
        "sender": "Clinic News <news@clinic.example>",
        "tracking_base_url": tracking_url,
        "token_secret": SECRET,
        "templates": TEMPLATES,
        "secure_portal_url": "https://portal.clinic.example/secure",
        "bounce_address": "bounces@clinic.example",
        "clock": clock,
        **kwargs,
    }
    relay = RelaySettings(
        "127.0.0.1",
        sink_port,
        "starttls",
        ca_file=str(tls.ca_cert_path),
        username="hub-relay",
        password="relay-password",
    )
    engine = SmtpEngine(relay, tmp_path / "smtp", **options)
    for audience in TEMPLATES:
        engine.ensure_audience(audience, audience, "treatment")
    return engine


def member(i: int, domain: str = "example.org") -> Member:
    return Member(f"p{i:06d}", f"person{i}@{domain}", {"given_name": f"Name{i}"})


def test_sends_over_starttls_with_auth_dkim_and_one_click_unsubscribe(
    tmp_path, relay, tls, dkim_key
):
    settings, record = dkim_key
    engine = engine_for(tmp_path, relay.port, tls, Clock(), dkim_settings=settings)
    results = engine.upsert("flu", [member(i) for i in range(3)], "batch-1")
    assert [r.status for r in results] == ["ok"] * 3
    messages = relay.wait_for(3)
    assert {m.over_tls for m in messages} == {True}
    assert {m.authenticated_as for m in messages} == {"hub-relay"}
    assert {m.mail_from for m in messages} == {"bounces@clinic.example"}
    ids = set()
    for sunk in messages:
        parsed = sunk.parsed()
        ids.add(parsed["Message-ID"])
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert re.fullmatch(r"<https://127\.0\.0\.1:1/t/u/[\w.-]+>", parsed["List-Unsubscribe"])
        assert dkim.verify(sunk.data, dnsfunc=lambda name, timeout=5: record)
        signature = parsed["DKIM-Signature"]
        signed = re.search(r"h=([^;]+)", signature.replace("\n", "").replace(" ", "")).group(1)
        assert {"list-unsubscribe", "list-unsubscribe-post", "from"} <= set(
            signed.lower().split(":")
        )
    assert len(ids) == 3  # a Message-ID per message


def test_no_address_person_token_or_field_value_in_any_url(tmp_path, relay, tls):
    engine = engine_for(tmp_path, relay.port, tls, Clock())
    people = [member(i) for i in range(2)]
    engine.upsert("flu", people, "k")
    for sunk, person in zip(relay.wait_for(2), people, strict=True):
        parsed = sunk.parsed()
        parts = [p.get_content() for p in parsed.walk() if p.get_content_maintype() == "text"]
        text = "\n".join([*parts, *(f"{k}: {v}" for k, v in parsed.items())])
        urls = URL.findall(text)
        assert urls  # tracked links, pixel and unsubscribe are there
        for url in urls:
            for secret in (person.email, person.external_id, person.fields["given_name"], "%40"):
                assert secret not in url
        assert "clinic.example/book" not in text  # the link target is looked up, not carried


def test_a_relay_without_starttls_is_refused_and_nothing_is_sent(tmp_path, tls):
    with SmtpSink(None, starttls=False) as plaintext:
        engine = engine_for(tmp_path, plaintext.port, tls, Clock())
        with pytest.raises(EngineTlsError) as refused:
            engine.upsert("flu", [member(1)], "k")
        assert refused.value.code == "SMTP_TLS_REQUIRED"
        assert plaintext.messages == []
        assert engine.list_member_ids("flu") == []


def test_a_relay_certificate_from_another_ca_is_refused(tmp_path, relay, tls):
    other = ensure_local_ca(tmp_path / "other-ca")
    engine = engine_for(tmp_path, relay.port, other, Clock())
    with pytest.raises(EngineTlsError):
        engine.upsert("flu", [member(1)], "k")
    assert relay.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # TLS-only port
def test_implicit_tls_relay(tmp_path, tls):
    with SmtpSink(tls, starttls=False, implicit_tls=True, users=USERS) as sink:
        relay = RelaySettings(
            "127.0.0.1", sink.port, "implicit", str(tls.ca_cert_path), "hub-relay", "relay-password"
        )
        engine = SmtpEngine(
            relay,
            tmp_path / "smtp",
            sender="news@clinic.example",
            tracking_base_url="https://127.0.0.1:1",
            token_secret=SECRET,
            templates=TEMPLATES,
            secure_portal_url="https://portal.clinic.example/s",
        )
        engine.ensure_audience("flu", "flu", "treatment")
        engine.upsert("flu", [member(1)], "k")
        assert sink.wait_for(1)[0].over_tls


def test_retries_and_resumed_batches_never_mail_anyone_twice(tmp_path, relay, tls):
    engine = engine_for(tmp_path, relay.port, tls, Clock())
    people = [member(i) for i in range(4)]
    first = engine.upsert("flu", people, "key-1")
    assert engine.upsert("flu", people, "key-1") == first  # the same batch, retried
    engine.upsert("flu", [*people[2:], member(9)], "key-2")  # a resumed run, new key
    relay.wait_for(5)
    assert sorted(m.rcpt_tos[0] for m in relay.messages) == sorted(
        p.email for p in [*people, member(9)]
    )
    engine.remove("flu", [people[0].external_id], "rm-1")
    engine.upsert("flu", [people[0]], "key-3")  # back in the audience: still no second mail
    assert len(relay.messages) == 5


def test_phi_goes_only_where_tls_is_guaranteed_else_a_notice_with_a_secure_link(
    tmp_path, relay, tls
):
    engine = engine_for(tmp_path, relay.port, tls, Clock(), tls_enforced_domains=["example.org"])
    engine.upsert("results", [member(1, "example.org"), member(2, "example.net")], "k")
    by_rcpt = {m.rcpt_tos[0]: m.parsed() for m in relay.wait_for(2)}
    full = by_rcpt["person1@example.org"]
    notice = by_rcpt["person2@example.net"]
    assert "HbA1c" in full.get_body().get_content()
    body = notice.get_body().get_content()
    assert "HbA1c" not in body and "Your lab results" not in notice["Subject"]
    assert re.search(r"https://portal\.clinic\.example/secure/[\w.-]+", body)


def test_tracking_records_opens_clicks_and_one_click_unsubscribes(tmp_path, relay, tls):
    clock = Clock()
    signer = TokenSigner(SECRET)
    holder: dict[str, SmtpEngine] = {}

    def handler(request):
        return TrackingEndpoint(holder["engine"].state, signer, clock)(request)

    with HttpsServer(handler, str(tls.cert_path), str(tls.key_path)) as tracking:
        engine = engine_for(tmp_path, relay.port, tls, clock, tracking.base_url)
        holder["engine"] = engine
        engine.upsert("flu", [member(1)], "k")
        message = relay.wait_for(1)[0].parsed()
        html_part = message.get_body(("html",)).get_content()
        pixel = re.search(r'src="([^"]+/t/o/[^"]+)"', html_part).group(1)
        click = re.search(r"href='([^']+/t/c/[^']+)'", html_part).group(1)
        unsubscribe = message["List-Unsubscribe"].strip("<>")
        ca = str(tls.ca_cert_path)

        clock.now += 1  # a prefetch right after the send
        requests.get(pixel, verify=ca, timeout=5, headers={"User-Agent": "Mozilla/5.0"})
        clock.now += 3600
        proxy = {"User-Agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"}
        requests.get(pixel, verify=ca, timeout=5, headers=proxy)
        human = {"User-Agent": "Mozilla/5.0 (Macintosh) AppleWebKit/605 Version/17 Mail"}
        assert requests.get(pixel, verify=ca, timeout=5, headers=human).content[:3] == b"GIF"
        redirect = requests.get(click, verify=ca, timeout=5, allow_redirects=False)
        assert redirect.status_code == 302
        assert redirect.headers["Location"] == "https://clinic.example/book?campaign=flu"

        tampered = click[:-3] + ("AAA" if not click.endswith("AAA") else "BBB")
        assert requests.get(tampered, verify=ca, timeout=5).status_code == 404
        page = requests.get(unsubscribe, verify=ca, timeout=5)
        assert page.status_code == 200 and b"<form" in page.content  # GET never unsubscribes
        one_click = requests.post(
            unsubscribe, data="List-Unsubscribe=One-Click", verify=ca, timeout=5,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert one_click.status_code == 200
        requests.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}, verify=ca, timeout=5)

        clock.now += 61 * 24 * 3600  # past the token lifetime
        assert requests.get(pixel, verify=ca, timeout=5).status_code == 404

    events = engine.events(None, 100).events
    kinds = [(e.type, e.machine_open) for e in events]
    assert kinds == [
        ("sent", False),
        ("open", True),
        ("open", True),
        ("open", False),
        ("click", False),
        ("unsubscribe", False),
    ]
    assert {e.external_id for e in events} == {"p000001"}
    page = engine.events(None, 2)
    assert engine.events(page.next_cursor, 100).events == events[2:]


def dsn(message_id: str, ref: str, status: str, action: str = "failed") -> bytes:
    return (
        "From: MAILER-DAEMON@relay.example\r\n"
        "To: bounces@clinic.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example\r\n\r\n"
        "Final-Recipient: rfc822; person1@example.org\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nX-Hub-Ref: {ref}\r\n"
        "From: news@clinic.example\r\nSubject: Time for your flu shot\r\n"
        "\r\n--B--\r\n"
    ).encode()


def test_hard_bounces_come_back_from_dsns(tmp_path, relay, tls):
    engine = engine_for(tmp_path, relay.port, tls, Clock())
    engine.upsert("flu", [member(1), member(2)], "k")
    sent = [message_from_bytes(m.data, policy=policy.default) for m in relay.wait_for(2)]
    spool = tmp_path / "bounces"
    spool.mkdir()
    hard, soft = sent
    (spool / "1.eml").write_bytes(dsn(hard["Message-ID"], hard["X-Hub-Ref"], "5.1.1"))
    (spool / "2.eml").write_bytes(dsn(soft["Message-ID"], "", "4.2.2", action="delayed"))
    (spool / "3.eml").write_bytes(b"Subject: out of office\r\n\r\nback monday\r\n")
    assert engine.ingest_bounces(spool) == 2
    assert list(spool.iterdir()) == []  # DSNs quote addresses: not kept
    bounces = [e for e in engine.events(None, 100).events if e.type == "bounce"]
    by_person = {e.external_id: e.bounce_type for e in bounces}
    recipients = {m["To"]: m for m in sent}
    assert by_person == {
        "p000001" if hard is recipients["person1@example.org"] else "p000002": "hard",
        "p000002" if hard is recipients["person1@example.org"] else "p000001": "soft",
    }
    assert engine.ingest_bounces(spool) == 0

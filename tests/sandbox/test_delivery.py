"""The SANDBOX engine's delivery seam: real MIME messages to a local SMTP sink over STARTTLS,
labelled SANDBOX, once per member; a sink without STARTTLS gets nothing."""

from __future__ import annotations

from pathlib import Path

from connectors.email import HttpEngine, Member
from connectors.email.smtp_transport import RelaySettings
from sandbox import SandboxEngine
from sandbox.delivery import SmtpDelivery
from sandbox.smtp_sink import SmtpSink
from sandbox.tls import ensure_local_ca

TOKEN, SECRET = "delivery-token", "delivery-secret"


def members(n: int) -> list[Member]:
    return [
        Member(f"tok_{i:04d}", f"person{i}@example.org", {"given_name": f"Name{i}"})
        for i in range(n)
    ]


def run_engine(tmp_path: Path, delivery: SmtpDelivery, batches: list[list[Member]]) -> None:
    engine = SandboxEngine(
        tmp_path / "engine", token=TOKEN, signing_secret=SECRET, delivery=delivery
    )
    with engine:
        api = HttpEngine(engine.base_url, TOKEN, SECRET, str(engine.ca_cert_path))
        api.ensure_audience("flu", "Flu reminders", "treatment")
        for number, batch in enumerate(batches):
            api.upsert("flu", batch, f"batch-{number}")
        delivery.flush()


def test_sends_are_delivered_as_mime_over_starttls_once_per_member(tmp_path):
    tls = ensure_local_ca(tmp_path / "engine" / "tls")
    with SmtpSink(tls, folder=tmp_path / "maildir") as sink:
        relay = RelaySettings("127.0.0.1", sink.port, ca_file=str(tls.ca_cert_path))
        delivery = SmtpDelivery(relay)
        run_engine(tmp_path, delivery, [members(3), members(3)])  # the second upsert: no mail
        received = sink.wait_for(3)
    assert len(received) == 3 and delivery.delivered == 3
    assert {m.over_tls for m in received} == {True}
    first = received[0].parsed()
    assert first["Subject"].startswith("[SANDBOX]") and first["X-Sandbox"] == "true"
    assert first["From"].endswith("@audience-hub.invalid>")
    assert "Name" in first.get_body().get_content()
    assert len(list((tmp_path / "maildir").glob("*.eml"))) == 3


def test_a_sink_without_starttls_receives_nothing(tmp_path):
    tls = ensure_local_ca(tmp_path / "engine" / "tls")
    with SmtpSink(None, starttls=False) as plaintext:
        delivery = SmtpDelivery(
            RelaySettings("127.0.0.1", plaintext.port, ca_file=str(tls.ca_cert_path))
        )
        run_engine(tmp_path, delivery, [members(2)])
        assert plaintext.messages == []
    assert delivery.failed == 2 and delivery.delivered == 0

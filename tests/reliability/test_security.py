"""Attacks on the edges: TLS downgrades and foreign certificates, forged, replayed and bursting
webhooks, SQL and shell injection through names and config, roles reading past their tier,
an edited audit row, and secrets leaking into logs."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import orjson
import psycopg
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg import errors

from connectors.email.errors import EngineTlsError
from connectors.email.http_api import HttpEngine
from connectors.email.signing import signature_header
from connectors.warehouse.audit import verify_chain
from domain.policy import PolicyError, load_policy
from services.quarantine import list_quarantine
from services.sync import sync_audience
from tests.reliability.conftest import ENGINE_SECRET, ENGINE_TOKEN
from tests.reliability.corpus.build import crm_row
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.support import BULK_AUDIENCE, Databases, add_bulk_audience

INJECTION = "x'; drop table vault.contact_fields; --"
HUB_TABLES = ("vault.contact_fields", "landing.patients", "activation.ledger", "audit.events")


def _tables_intact(conn: psycopg.Connection) -> dict[str, int]:
    return {t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in HUB_TABLES}


# --- TLS -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8443", "HTTP://127.0.0.1", "ws://127.0.0.1", "https:/127.0.0.1"]
)
def test_engine_urls_that_are_not_https_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        HttpEngine(url, ENGINE_TOKEN, ENGINE_SECRET)


def _self_signed(folder: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "self-signed.pem", folder / "self-signed.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_engine_certificates_outside_the_configured_ca_are_refused(sandbox, tmp_path, figures):
    real, other = sandbox(), sandbox()  # two SANDBOX engines: two unrelated local CAs
    sleeps: list[float] = []
    cert, key = _self_signed(tmp_path)
    impostor = FaultProxy(real.base_url, str(real.ca_cert_path), cert, key, lambda m: "pass")
    impostor.start()
    try:
        cases = [
            (real.base_url, str(other.ca_cert_path)),  # a valid cert, from another CA
            (real.base_url, None),  # the system trust store does not know a private CA
            (impostor.base_url, str(real.ca_cert_path)),  # self-signed, in front of the engine
            (impostor.base_url, None),
        ]
        for url, ca_file in cases:
            api = HttpEngine(url, ENGINE_TOKEN, ENGINE_SECRET, ca_file, sleep=sleeps.append)
            with pytest.raises(EngineTlsError):
                api.ensure_audience("tls-probe", "probe", "treatment")
            figures.add("tls_refusals")
    finally:
        impostor.stop()
    assert sleeps == []  # a certificate verdict is final: never retried
    assert impostor.forwarded == 0  # nothing, not even the token, reached the engine


# --- webhooks --------------------------------------------------------------------------------

HOOK_SECRET = "whsec-reliability"


@pytest.fixture
def webhooks(databases: Databases, schema_template, tmp_path: Path):
    from sandbox.tls import ensure_local_ca
    from services.webhooks import WebhookService, WebhookSettings

    warehouse = databases.create("rel_webhooks", template=schema_template)
    tls = ensure_local_ca(tmp_path / "tls")
    state = {"url": warehouse.url()}
    service = WebhookService(
        WebhookSettings(destination="sandbox", hub_secrets=[HOOK_SECRET]),
        tmp_path / "spool",
        lambda: psycopg.connect(state["url"]),
        str(tls.cert_path),
        str(tls.key_path),
    )
    service.ca_file = str(tls.ca_cert_path)  # type: ignore[attr-defined]
    service.state = state  # type: ignore[attr-defined]
    service.warehouse = warehouse  # type: ignore[attr-defined]
    with service:
        yield service


def _event(n: int) -> dict[str, object]:
    kinds = ("open", "click", "delivered", "unsubscribe", "bounce")
    kind = kinds[n % len(kinds)]
    return {
        "event_id": f"evt-rel-{n:05d}",
        "type": kind,
        "external_id": f"t1_person{n % 97:04d}",
        "audience_id": "flu",
        "occurred_at": "2026-03-01T09:00:00.000Z",
        "machine_open": False,
        "bounce_type": "hard" if kind == "bounce" else None,
        "url": "https://sandbox.audience-hub.invalid/x" if kind == "click" else None,
    }


def _post(service, body: bytes, t: int, secret: str = HOOK_SECRET, signed: bytes | None = None):
    header = signature_header(secret, "POST", "/webhooks/hub", signed or body, t)
    return requests.post(
        service.base_url + "/webhooks/hub",
        data=body,
        headers={"X-Hub-Signature": header, "Content-Type": "application/json"},
        verify=service.ca_file,
        timeout=30,
    )


def test_a_webhook_burst_with_duplicates_counts_every_event_once(webhooks, figures):
    """260 deliveries from 16 senders at once; events overlap across deliveries and some
    deliveries come twice (newly signed): each distinct event lands exactly once."""
    rng = random.Random(5)
    deliveries = [sorted(rng.sample(range(400), 8)) for _ in range(200)]
    deliveries += rng.sample(deliveries, 60)  # re-deliveries of whole batches
    now = int(time.time())

    def send(i: int) -> int:
        body = orjson.dumps({"events": [_event(n) for n in deliveries[i]]})
        return _post(webhooks, body, now - (i % 120)).status_code  # distinct signatures

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(len(deliveries))))
    webhooks.drain()
    distinct = {n for batch in deliveries for n in batch}
    with webhooks.warehouse.connect() as conn:
        stored = conn.execute("select count(*), count(distinct event_id) from engagement.events")
        total, unique = stored.fetchone()
    figures.add("webhook_deliveries", len(deliveries))
    duplicated_signature = statuses.count(409)  # same batch, same second: a true replay
    assert set(statuses) <= {200, 409} and statuses.count(200) >= 200
    assert duplicated_signature <= 60
    assert total == unique == len(distinct)


def test_webhooks_during_a_database_outage_are_kept_and_applied_once(
    webhooks, databases: Databases
):
    """The receiver answers from its spool while the warehouse is unreachable; once it is
    back, every event is applied exactly once."""
    name = "rel_webhooks"
    databases.rename(name, f"{name}_away")  # a real outage: the database is not there
    try:
        body = orjson.dumps({"events": [_event(n) for n in range(20)]})
        assert _post(webhooks, body, int(time.time())).status_code == 200
        with pytest.raises(psycopg.OperationalError):
            webhooks.drain()
        assert list(webhooks.spool.pending())  # kept, not lost
    finally:
        databases.rename(f"{name}_away", name)
    webhooks.drain()
    webhooks.drain()
    with webhooks.warehouse.connect() as conn:
        assert conn.execute("select count(*) from engagement.events").fetchone()[0] == 20


def test_forged_stale_and_future_webhooks_are_refused(webhooks, figures):
    body = orjson.dumps({"events": [_event(1)]})
    now = int(time.time())
    refused = [
        _post(webhooks, body, now, secret="not-the-secret"),
        _post(webhooks, body, now, signed=orjson.dumps({"events": [_event(2)]})),
        _post(webhooks, body, now - 3600),  # outside the window, in the past
        _post(webhooks, body, now + 3600),  # and in the future
        requests.post(
            webhooks.base_url + "/webhooks/hub",
            data=body,
            headers={"X-Hub-Signature": "t=abc,v1=zz"},
            verify=webhooks.ca_file,
            timeout=10,
        ),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)
    figures.add("webhooks_refused", len(refused))
    webhooks.drain()
    with webhooks.warehouse.connect() as conn:
        assert conn.execute("select count(*) from engagement.events").fetchone()[0] == 0


# --- injection -------------------------------------------------------------------------------


def test_sql_in_audience_destination_and_filters_does_nothing(
    databases: Databases, built_template, cipher, sandbox, figures
):
    warehouse = databases.create("rel_injection", template=built_template)
    engine = sandbox()
    api = HttpEngine(engine.base_url, ENGINE_TOKEN, ENGINE_SECRET, str(engine.ca_cert_path))
    with warehouse.connect() as conn:
        add_bulk_audience(conn, cipher, 20)
        before = _tables_intact(conn)
        with pytest.raises(LookupError):
            sync_audience(conn, api, cipher, destination="sandbox", audience=INJECTION)
        conn.rollback()
        # A destination name is configuration (HUB_ENGINE_DESTINATION): stored, never run.
        result = sync_audience(conn, api, cipher, destination=INJECTION, audience=BULK_AUDIENCE)
        assert result.added == 20
        stored = conn.execute(
            "select count(*) from activation.sync_state where destination = %s", (INJECTION,)
        ).fetchone()[0]
        for value in (INJECTION, "' or '1'='1", "fhir') or true --"):
            assert list_quarantine(conn, source=value, reason=value) == []
        after = _tables_intact(conn)
    assert stored == 20
    assert after["vault.contact_fields"] == before["vault.contact_fields"]
    figures.add("injection_attempts", 5)


def test_sql_in_a_cli_audience_name_does_nothing(databases: Databases, built_template, monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app

    warehouse = databases.create("rel_injection_cli", template=built_template)
    with warehouse.connect() as conn:
        before = _tables_intact(conn)
    monkeypatch.setenv("DATABASE_URL", warehouse.url())
    result = CliRunner().invoke(app, ["sync", INJECTION, "--dry-run", "--json"])
    assert result.exit_code != 0
    assert isinstance(result.exception, LookupError)
    with warehouse.connect() as conn:
        assert _tables_intact(conn) == before


def test_a_field_policy_cannot_smuggle_sql_into_the_landing_ddl(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "entities:\n"
        "  contact:\n"
        "    fields:\n"
        "      subject_system: subject\n"
        "      subject_id: subject\n"
        '      "x text); drop table vault.contact_fields; create table landing.y (a": "keep:text"\n'
    )
    with pytest.raises(PolicyError):
        load_policy(policy)


# --- roles and the audit chain ---------------------------------------------------------------


def test_roles_on_a_built_warehouse_read_only_their_tier(databases: Databases, built_template):
    """A complement to tests/privacy/test_roles.py, on a warehouse dbt really built."""
    warehouse = databases.create("rel_roles", template=built_template)
    with warehouse.connect(autocommit=True) as conn:
        roles = {
            r for (r,) in conn.execute("select rolname from pg_roles where rolname like 'hub_%'")
        }
        if not {"hub_analyst", "hub_sender"} <= roles:
            pytest.skip("the hub's roles are not installed on this server")
        warehouse.ensure_schema()

        def can_read(role: str, table: str) -> bool:
            conn.execute(f"set role {role}")
            try:
                conn.execute(f"select 1 from {table} limit 1")
                return True
            except errors.InsufficientPrivilege:
                return False
            finally:
                conn.execute("reset role")

        for table in ("vault.contact_fields", "vault.contacts", "vault.identity_keys",
                      "landing.patients",
                      "quarantine.records", "activation.ledger", "audit.events"):  # fmt: skip
            assert not can_read("hub_analyst", table), table
        assert can_read("hub_analyst", "marts.dim_persons")
        for table in ("vault.contact_fields", "vault.contacts"):  # only through the function
            assert not can_read("hub_sender", table), table
        for role in ("hub_analyst", "hub_sender", "hub_pipeline"):
            conn.execute(f"set role {role}")
            with pytest.raises(errors.DatabaseError):
                conn.execute("update audit.events set row_count = row_count + 1")
            conn.execute("reset role")


def test_the_audit_chain_names_an_edited_or_deleted_row(databases: Databases, built_template):
    warehouse = databases.create("rel_audit_edit", template=built_template)
    with warehouse.connect() as conn:
        ids = [i for (i,) in conn.execute("select audit_id from audit.events order by 1")]
        assert len(ids) >= 3 and verify_chain(conn)[0]
        with pytest.raises(errors.RaiseException):
            conn.execute("delete from audit.events where audit_id = %s", (ids[1],))
        conn.rollback()
        # Only a superuser switching the trigger off can change history: the chain says where.
        conn.execute("alter table audit.events disable trigger audit_events_append_only")
        conn.execute("update audit.events set row_count = 42 where audit_id = %s", (ids[1],))
        conn.commit()
        assert verify_chain(conn)[:2] == (False, ids[1])
        conn.execute("update audit.events set row_count = row_count where audit_id = %s", (ids[1],))
        conn.execute("delete from audit.events where audit_id = %s", (ids[1],))
        conn.commit()
        intact, bad, _ = verify_chain(conn)
        assert not intact and bad in (ids[1], ids[2])


# --- secrets in logs -------------------------------------------------------------------------


def _secret_forms(secret: bytes | str) -> set[str]:
    raw = secret.encode() if isinstance(secret, str) else secret
    forms = {base64.b64encode(raw).decode(), raw.hex()}
    if isinstance(secret, str):
        forms.add(secret)
    return {f for f in forms if len(f) >= 8}


def test_keys_and_credentials_never_reach_logs_or_the_dagster_event_log(
    databases: Databases, built_template, privacy, cipher, sandbox, tmp_path, caplog, capfd
):
    from assets.activate import audience_syncs
    from assets.ingest import ingest_assets
    from pipelines.resources import EmailEngineResource, InboundResource, WarehouseResource

    caplog.set_level("DEBUG")
    warehouse = databases.create("rel_secrets", template=built_template)
    with warehouse.connect() as conn:
        add_bulk_audience(conn, cipher, 30)
    engine = sandbox()
    crm = tmp_path / "contacts.csv"
    from tests.reliability.corpus.build import _csv

    crm.write_bytes(_csv([crm_row(contact_id=f"CSEC{i:03d}") for i in range(20)]))
    secrets: set[str] = set()
    for key in cipher.keys.values():
        secrets |= _secret_forms(key)
    secrets |= _secret_forms(privacy.tokenizer().key)
    secrets |= _secret_forms(ENGINE_TOKEN) | _secret_forms(ENGINE_SECRET)
    for name, value in os.environ.items():
        if name.startswith("HUB_") and name.endswith(("_KEY", "_PASSPHRASE", "_SECRET", "_TOKEN")):
            secrets |= _secret_forms(value)
    landing_crm = next(a for a in ingest_assets if "crm" in str(a.keys))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [landing_crm, audience_syncs],
        instance=instance,
        resources={
            "warehouse": WarehouseResource(database_url=warehouse.url()),
            "privacy": privacy,
            "inbound": InboundResource(root=str(tmp_path)),
            "email_engine": EmailEngineResource(
                base_url=engine.base_url,
                token=ENGINE_TOKEN,
                signing_secret=ENGINE_SECRET,
                ca_file=str(engine.ca_cert_path),
            ),
        },
        run_config={
            "ops": {
                landing_crm.op.name: {"config": {"uris": [str(crm)]}},
                "audience_syncs": {"config": {"audiences": [BULK_AUDIENCE]}},
            }
        },
    )
    assert result.success
    events = instance.all_logs(result.run_id)
    event_text = "\n".join(str(e.user_message) + repr(e.dagster_event) for e in events)
    out, err = capfd.readouterr()
    logs = {"caplog": caplog.text, "dagster events": event_text, "stdout": out, "stderr": err}
    assert len(event_text) > 1000  # the run really logged something to scan
    leaks = {where: [s[:6] + "..." for s in secrets if s in text] for where, text in logs.items()}
    assert not any(leaks.values()), leaks


@pytest.fixture(autouse=True)
def _engine_threads_quiet(monkeypatch):
    monkeypatch.setattr(threading, "excepthook", lambda args: None)

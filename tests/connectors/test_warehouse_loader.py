"""The loader protects and lands records in one transaction, against real PostgreSQL."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from connectors.warehouse.audit import record_audit, verify_chain
from connectors.warehouse.loader import MERGE_LOCK, load_file
from domain.keys import KeyringFileProvider
from domain.policy import default_policy
from domain.protect import Protector
from domain.records import Rejection, SourceRecord

CANARY_NAME = "Zyxwanda"
CANARY_EMAIL = "zyxwanda.canary@example.org"


@pytest.fixture()
def protector(hub_state: Path) -> Protector:
    provider = KeyringFileProvider(hub_state / "keyring.json")
    return Protector(default_policy(), provider.tokenizer(), provider.vault_cipher())


def _patient(subject_id: str, position: str) -> SourceRecord:
    return SourceRecord(
        "patient",
        position,
        {
            "subject_system": "fhir",
            "subject_id": subject_id,
            "source_id": subject_id,
            "mrn": "MRN-CANARY-1",
            "mrn_authority": "HUBHOSP",
            "given_name": CANARY_NAME,
            "family_name": "Núñez",
            "birth_date": date(1961, 4, 17),
            "email": CANARY_EMAIL,
            "postal_code": "10001",
            "sex": "female",
            "free_text_the_policy_never_heard_of": "drop me",
            "effective_at": datetime(2026, 1, 2, tzinfo=UTC),
        },
    )


def _file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


def test_file_loads_whole_with_phi_only_in_the_vault(warehouse, protector, tmp_path):
    uri = _file(tmp_path, "patients.ndjson", "three records\n")
    units = [
        _patient("p-1", "line 1"),
        Rejection("line 2", "NOT_JSON", "line 2: not JSON", payload=CANARY_EMAIL.encode()),
        _patient("p-2", "line 3"),
    ]
    with warehouse.connect() as conn:
        result = load_file(conn, uri=uri, source="fhir", units=units, protector=protector)
        assert (result.read, result.loaded, result.quarantined) == (3, 2, 1)
        assert result.reconciled
        row = conn.execute(
            "select birth_year, birth_month, zip3, has_email, sex from landing.patients"
            " where file_id = %s and position = 'line 1'",
            (result.file_id,),
        ).fetchone()
        assert row == (1961, 4, "100", True, "female")
        landing_text = conn.execute(
            "select string_agg(p::text, ' ') from landing.patients p where file_id = %s",
            (result.file_id,),
        ).fetchone()[0]
        quarantine_text = conn.execute(
            "select string_agg(q::text, ' ') from quarantine.records q where file_id = %s",
            (result.file_id,),
        ).fetchone()[0]
        for canary in (CANARY_NAME, CANARY_EMAIL, "MRN-CANARY-1", "1961-04-17", "Núñez"):
            assert canary not in landing_text
            assert canary not in quarantine_text
        vault = conn.execute(
            "select count(*) from vault.contact_fields where column_name = 'email'"
            " and subject_token = %s",
            (protector.tokenizer.subject_token("fhir", "p-1"),),
        ).fetchone()[0]
        assert vault == 1
        keys = conn.execute("select count(*) from vault.identity_keys").fetchone()[0]
        assert keys >= 3
    assert protector.unknown_fields["patient.free_text_the_policy_never_heard_of"] == 2


def test_reloading_the_same_file_is_skipped(warehouse, protector, tmp_path):
    uri = _file(tmp_path, "again.ndjson", "same bytes\n")
    with warehouse.connect() as conn:
        first = load_file(
            conn, uri=uri, source="fhir", units=[_patient("p-9", "line 1")], protector=protector
        )
        second = load_file(
            conn, uri=uri, source="fhir", units=[_patient("p-9", "line 1")], protector=protector
        )
    assert not first.skipped and second.skipped
    assert second.file_id == first.file_id and second.loaded == 1


def test_a_crash_mid_file_leaves_nothing_behind(warehouse, protector, tmp_path):
    uri = _file(tmp_path, "crash.ndjson", "will crash\n")

    def exploding_units():
        yield _patient("p-crash", "line 1")
        raise RuntimeError("disk on fire")

    with warehouse.connect() as conn:
        with pytest.raises(RuntimeError):
            load_file(conn, uri=uri, source="fhir", units=exploding_units(), protector=protector)
        assert (
            conn.execute(
                "select count(*) from landing.source_files where uri = %s", (uri,)
            ).fetchone()[0]
            == 0
        )


def test_audit_chain_detects_an_edited_record(warehouse):
    with warehouse.connect() as conn:
        with conn.transaction():
            record_audit(conn, "test", "object-a", 1)
            record_audit(conn, "test", "object-b", 2)
        assert verify_chain(conn)[0]
        with pytest.raises(Exception, match="append-only"), conn.transaction():
            conn.execute("update audit.events set row_count = 99")


def test_audit_chain_names_the_first_bad_record_after_a_superuser_edit(warehouse):
    with warehouse.connect() as conn:
        with conn.transaction():
            record_audit(conn, "test", "object-c", 3)
        target = conn.execute("select max(audit_id) from audit.events").fetchone()[0]
        with conn.transaction():
            conn.execute("alter table audit.events disable trigger audit_events_append_only")
            conn.execute("update audit.events set row_count = 42 where audit_id = %s", (target,))
            conn.execute("alter table audit.events enable trigger audit_events_append_only")
        intact, bad_id, _ = verify_chain(conn)
        assert not intact and bad_id == target
        with conn.transaction():  # put it back so later tests see an intact chain
            conn.execute("alter table audit.events disable trigger audit_events_append_only")
            conn.execute("update audit.events set row_count = 3 where audit_id = %s", (target,))
            conn.execute("alter table audit.events enable trigger audit_events_append_only")
        assert verify_chain(conn)[0]


def _condition(source_id: str, status: str, effective_at: datetime) -> SourceRecord:
    return SourceRecord(
        "condition",
        "line 1",
        {
            "subject_system": "fhir",
            "subject_id": "p-upsert",
            "source_id": source_id,
            "code_system": "snomed",
            "code": "44054006",
            "clinical_status": status,
            "effective_at": effective_at,
        },
    )


def test_records_upsert_by_natural_key_and_effective_time_not_arrival(
    warehouse, protector, tmp_path
):
    newer = datetime(2026, 5, 1, tzinfo=UTC)
    older = datetime(2025, 5, 1, tzinfo=UTC)
    token = protector.tokenizer.token("source_id", "cond-upsert-1")
    with warehouse.connect() as conn:
        for name, status, when in (
            ("v2.ndjson", "resolved", newer),  # the update arrives first...
            ("v1.ndjson", "active", older),  # ...then a late re-delivery of the old version
            ("v2-again.ndjson", "resolved", newer),  # and a duplicate of the newest
        ):
            uri = _file(tmp_path, name, f"{name}\n")
            load_file(
                conn,
                uri=uri,
                source="fhir",
                units=[_condition("cond-upsert-1", status, when)],
                protector=protector,
            )
        rows = conn.execute(
            "select clinical_status, effective_at from landing.conditions"
            " where source_id_token = %s",
            (token,),
        ).fetchall()
    assert rows == [("resolved", newer)]


def test_versions_of_a_key_spread_over_batches_merge_as_one_file(
    warehouse, protector, tmp_path, monkeypatch
):
    # Batches are merged one by one while the file is read: the newest effective time must
    # still win, and on a tie the later row, as if the whole file were merged at once.
    monkeypatch.setattr("connectors.warehouse.loader.BATCH_ROWS", 2)
    newer = datetime(2026, 5, 1, tzinfo=UTC)
    older = datetime(2025, 5, 1, tzinfo=UTC)
    units = [
        _condition("cond-batches-1", "active", newer),
        _condition("cond-batches-2", "active", older),
        _condition("cond-batches-1", "inactive", older),  # an older version, later batch
        _condition("cond-batches-2", "resolved", newer),
        _condition("cond-batches-1", "resolved", newer),  # same time as the first: later wins
    ]
    uri = _file(tmp_path, "batches.ndjson", "batches\n")
    with warehouse.connect() as conn:
        result = load_file(conn, uri=uri, source="fhir", units=units, protector=protector)
        statuses = {
            source_id: conn.execute(
                "select clinical_status from landing.conditions where source_id_token = %s",
                (protector.tokenizer.token("source_id", source_id),),
            ).fetchall()
            for source_id in ("cond-batches-1", "cond-batches-2")
        }
    assert result.reconciled and result.loaded == 5
    assert statuses == {"cond-batches-1": [("resolved",)], "cond-batches-2": [("resolved",)]}


def test_a_crash_after_batches_were_written_leaves_nothing_behind(
    warehouse, protector, tmp_path, monkeypatch
):
    monkeypatch.setattr("connectors.warehouse.loader.BATCH_ROWS", 1)
    uri = _file(tmp_path, "crash-late.ndjson", "will crash late\n")

    def exploding_units():
        for n in range(5):  # each one a batch, staged and merged before the crash
            yield _patient(f"p-late-{n}", f"line {n + 1}")
        raise RuntimeError("disk on fire")

    with warehouse.connect() as conn:
        with pytest.raises(RuntimeError):
            load_file(conn, uri=uri, source="fhir", units=exploding_units(), protector=protector)
        subjects = [protector.protect(_patient(f"p-late-{n}", "")).subject_token for n in range(5)]
        counts = conn.execute(
            "select (select count(*) from landing.source_files where uri = %s),"
            " (select count(*) from landing.patients where subject_token = any(%s)),"
            " (select count(*) from vault.contact_fields where subject_token = any(%s))",
            (uri, subjects, subjects),
        ).fetchone()
    assert counts == (0, 0, 0)


@pytest.mark.parametrize("source_busy", [False, True], ids=["own-turn", "staged-while-busy"])
def test_a_file_staged_while_its_source_merges_lands_as_if_merged_batch_by_batch(
    warehouse, protector, tmp_path, monkeypatch, source_busy
):
    """Another load of the source holds the merge lock: this file stages all its batches,
    then merges them at once when the lock is free. Newest effective time wins, on a tie the
    later row, on landing and in the vault alike."""
    monkeypatch.setattr("connectors.warehouse.loader.BATCH_ROWS", 2)
    same_time = datetime(2026, 5, 1, tzinfo=UTC)
    first, second = _patient("p-staged", "line 1"), _patient("p-staged", "line 4")
    first.fields.update(given_name="Firstname", effective_at=same_time)
    second.fields.update(given_name="Secondname", effective_at=same_time)
    units = [
        first,
        _condition("cond-staged-1", "active", same_time),
        _condition("cond-staged-1", "inactive", datetime(2025, 5, 1, tzinfo=UTC)),
        second,
        _condition("cond-staged-1", "resolved", same_time),
    ]
    uri = _file(tmp_path, "staged.ndjson", f"staged while busy: {source_busy}\n")
    with warehouse.connect() as holder, warehouse.connect() as conn:
        if source_busy:
            holder.execute("select pg_advisory_xact_lock(%s::int, hashtext('fhir'))", (MERGE_LOCK,))
        with ThreadPoolExecutor(1) as pool:
            loading = pool.submit(
                load_file, conn, uri=uri, source="fhir", units=units, protector=protector
            )
            if source_busy:
                _wait_for_a_waiting_advisory_lock(holder)
                assert not loading.done()
                holder.commit()
            result = loading.result(timeout=60)
        subject = protector.protect(first).subject_token
        version, blob = conn.execute(
            "select key_version, ciphertext from vault.contact_fields"
            " where subject_token = %s and column_name = 'given_name'",
            (subject,),
        ).fetchone()
        status = conn.execute(
            "select clinical_status from landing.conditions where source_id_token = %s",
            (protector.tokenizer.token("source_id", "cond-staged-1"),),
        ).fetchall()
    assert result.reconciled and result.loaded == 5
    assert protector.cipher.decrypt(subject, "given_name", version, blob) == "Secondname"
    assert status == [("resolved",)]


def _wait_for_a_waiting_advisory_lock(conn) -> None:
    for _ in range(600):
        waiting = conn.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and not granted"
        ).fetchone()[0]
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError("the load never waited for the merge lock")

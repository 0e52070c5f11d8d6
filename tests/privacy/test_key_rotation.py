"""Key rotation on a populated warehouse: every vault row still decrypts, every join holds."""

from __future__ import annotations

import csv
from collections import defaultdict

import pytest

from connectors.warehouse.audit import verify_chain
from domain.keys import KeyringFileProvider
from domain.normalize import normalize_email
from domain.policy import default_policy
from domain.protect import Protector
from services.ingest import ingest_uris
from services.keys import rotate_token_key, rotate_vault_key

TOKEN_TABLE_SQL = (
    "select c.table_schema, c.table_name, c.column_name from information_schema.columns c"
    " join information_schema.tables t using (table_schema, table_name)"
    " where t.table_type = 'BASE TABLE' and c.data_type = 'text'"
    " and c.table_schema not in ('pg_catalog', 'information_schema', 'audit', 'activation')"
    " and not (c.table_schema = 'vault' and c.table_name = 'token_rekey')"
)


@pytest.fixture
def populated(populated_copy):
    """(warehouse, keyring): a private copy of the populated warehouse and its keys."""
    return populated_copy


def _vault_plaintexts(conn, cipher) -> dict[tuple[str, str], str]:
    rows = conn.execute(
        "select subject_token, column_name, key_version, ciphertext from vault.contact_fields"
    ).fetchall()
    return {(s, c): cipher.decrypt(s, c, v, blob) for s, c, v, blob in rows}


def _payloads(conn, cipher) -> dict[int, bytes]:
    rows = conn.execute(
        "select quarantine_id, file_id, position, payload_key_version, payload"
        " from quarantine.records where payload is not null"
    ).fetchall()
    return {q: cipher.decrypt_bytes(f"quarantine:{f}", pos, v, blob) for q, f, pos, v, blob in rows}


def test_vault_rotation_reencrypts_every_row_in_batches_and_retires_the_old_key(populated):
    warehouse, keyring = populated
    reader = keyring.vault_cipher()  # a long-running reader that only knows version 1
    with warehouse.connect() as conn:
        before = _vault_plaintexts(conn, reader)
        payloads_before = _payloads(conn, reader)
        assert before and payloads_before
        report = rotate_vault_key(conn, keyring, batch_rows=97, retire_old=True)
        versions = conn.execute(
            "select array_agg(distinct key_version) from vault.contact_fields"
        ).fetchone()[0]
        payload_versions = conn.execute(
            "select array_agg(distinct payload_key_version) from quarantine.records"
            " where payload is not null"
        ).fetchone()[0]
        after = _vault_plaintexts(conn, reader)  # the stale reader reloads the new key
        payloads_after = _payloads(conn, keyring.vault_cipher())
        intact, _, _ = verify_chain(conn)
    assert report.rows_reencrypted == len(before)
    assert report.batches > len({subject for subject, _ in before}) // 97  # rows: subjects
    assert versions == [2] and payload_versions == [2]
    assert after == before and payloads_after == payloads_before
    assert report.retired_versions == [1]
    assert keyring.versions("vault").available == (2,)
    assert intact


def _partition(conn) -> dict[str, frozenset[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for subject, person in conn.execute(
        "select subject_token, person_token from landing.person_xref"
    ):
        groups[person].add(subject)
    return {person: frozenset(subjects) for person, subjects in groups.items()}


def _all_token_values(conn) -> set[str]:
    values: set[str] = set()
    for schema, table, column in conn.execute(TOKEN_TABLE_SQL).fetchall():
        rows = conn.execute(
            f'select distinct "{column}" from "{schema}"."{table}" where "{column}" ~ %s',
            (r"^t[0-9]+_[0-9a-f]{32}$",),
        )
        values.update(v for (v,) in rows)
    return values


def test_token_rotation_rekeys_every_table_and_keeps_every_join(populated):
    warehouse, keyring = populated
    old_tokenizer = keyring.tokenizer()
    cipher = keyring.vault_cipher()
    with warehouse.connect() as conn:
        partition_before = _partition(conn)
        plaintexts_before = _vault_plaintexts(conn, cipher)
        person = next(iter(partition_before))
        conn.execute(
            "insert into engagement.suppressions (event_id, destination, person_token,"
            " event_type, effective_at) values ('evt-1', 'sandbox', %s, 'unsubscribe', now())",
            (person,),
        )
        conn.execute(
            "insert into activation.sync_state (destination, audience, person_token,"
            " payload_hash) values ('sandbox', 'reengagement', %s, 'h')",
            (person,),
        )
        # A dbt-built relation holding person and subject tokens is re-keyed too.
        conn.execute("create schema if not exists marts")
        conn.execute(
            "create table marts.person_facts as select person_token, subject_token"
            " from landing.person_xref"
        )
        conn.commit()

        report = rotate_token_key(conn, keyring, default_policy())

        mapping = dict(conn.execute("select old_token, new_token from vault.token_rekey"))
        partition_after = _partition(conn)
        remaining_old = {v for v in _all_token_values(conn) if v.startswith("t1_")}
        xref_subjects = {
            s for (s,) in conn.execute("select subject_token from landing.person_xref")
        }
        orphans = conn.execute(
            "select count(*) from vault.contact_fields v where not exists"
            " (select 1 from landing.person_xref x where x.subject_token = v.subject_token)"
        ).fetchone()[0]
        landing_orphans = sum(
            conn.execute(
                f"select count(*) from landing.{table} t where not exists (select 1 from"
                " landing.person_xref x where x.subject_token = t.subject_token)"
            ).fetchone()[0]
            for table in ("patients", "contacts", "observations", "encounters")
        )
        plaintexts_after = _vault_plaintexts(conn, keyring.vault_cipher())
        suppression = conn.execute(
            "select person_token from engagement.suppressions where event_id = 'evt-1'"
        ).fetchone()[0]
        engine_state = conn.execute("select person_token from activation.sync_state").fetchone()[0]
        facts_join = conn.execute(
            "select count(*), count(x.subject_token) from marts.person_facts f"
            " left join landing.person_xref x"
            " on x.subject_token = f.subject_token and x.person_token = f.person_token"
        ).fetchone()
        # Late engine feedback still naming the old id lands under the new person.
        conn.execute(
            "insert into engagement.events (event_id, destination, person_token, event_type,"
            " occurred_at) values ('evt-2', 'sandbox', %s, 'open', now())",
            (person,),
        )
        late = conn.execute(
            "select person_token from engagement.events where event_id = 'evt-2'"
        ).fetchone()[0]
        intact, _, _ = verify_chain(conn)
        conn.rollback()

    assert report.to_version == 2 and keyring.tokenizer().version == 2
    assert report.persons_mapped == len(partition_before)
    # Same people, same groupings, every subject and person token replaced.
    assert len(partition_after) == len(partition_before)
    renamed = {
        mapping[p]: frozenset(mapping[s] for s in subjects)
        for p, subjects in partition_before.items()
    }
    assert renamed == partition_after
    assert not remaining_old
    assert orphans == 0 and landing_orphans == 0
    # Every vault value decrypts under its new subject token and is unchanged.
    assert {(mapping[s], c): v for (s, c), v in plaintexts_before.items()} == plaintexts_after
    assert {s for s, _ in plaintexts_after} <= xref_subjects
    assert suppression == mapping[person] == late
    assert engine_state == person  # the id the engine holds is history, not rewritten
    assert facts_join[0] == facts_join[1] > 0
    assert intact
    assert old_tokenizer.token("x", "y") != keyring.tokenizer().token("x", "y")


def test_new_ingests_after_rotation_join_the_rekeyed_people(
    populated, generated_population, tmp_path
):
    warehouse, keyring = populated
    with warehouse.connect() as conn:
        rotate_token_key(conn, keyring, default_policy())
        contacts_before = conn.execute("select count(*) from landing.contacts").fetchone()[0]
    with open(generated_population / "crm" / "contacts.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        row = next(r for r in reader if normalize_email(r["email"]))
        header = reader.fieldnames
    # The same CRM contact re-exported with a later update: a new file under the new key.
    row["updated_at"] = "2099-01-01T00:00:00Z"
    again = tmp_path / "contacts-again.csv"
    with open(again, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerow(row)
    tokenizer = keyring.tokenizer()
    protector = Protector(default_policy(), tokenizer, keyring.vault_cipher())
    with warehouse.connect() as conn:
        [result] = ingest_uris(conn, [str(again)], protector)
        contacts_after = conn.execute("select count(*) from landing.contacts").fetchone()[0]
        email_key = tokenizer.token("id:email", normalize_email(row["email"]))
        linked = conn.execute(
            "select count(*) from vault.identity_keys k join landing.person_xref x"
            " using (subject_token) where k.key_type = 'email' and k.key_hash = %s",
            (email_key,),
        ).fetchone()[0]
    assert result.loaded == 1
    assert contacts_after == contacts_before  # upserted onto the re-keyed subject
    assert linked >= 1


def test_token_rotation_resumes_after_a_crash_before_promotion(populated, monkeypatch):
    warehouse, keyring = populated
    real_promote = KeyringFileProvider.promote

    def crash(self, kind, version):
        raise RuntimeError("power cut")

    with warehouse.connect() as conn:
        monkeypatch.setattr(KeyringFileProvider, "promote", crash)
        with pytest.raises(RuntimeError):
            rotate_token_key(conn, keyring, default_policy())
        # Committed in the database, not yet current in the keyring.
        assert keyring.versions("token").pending == (2,)
        status = conn.execute(
            "select status from vault.key_rotations order by rotation_id desc limit 1"
        ).fetchone()[0]
        conn.commit()
        monkeypatch.setattr(KeyringFileProvider, "promote", real_promote)
        report = rotate_token_key(conn, keyring, default_policy())
        old = conn.execute(
            "select count(*) from landing.patients where subject_token like 't1\\_%'"
        ).fetchone()[0]
    assert status == "committed"
    assert report.resumed and report.to_version == 2
    assert keyring.tokenizer().version == 2
    assert old == 0

"""An incremental sync reads only what its writers stamped as changed since its last run
(connectors/warehouse/changes.py), and still misses nothing: a write in flight while it
runs, a person who gained a source subject, a rejected update, a newly declared field."""

from __future__ import annotations

import psycopg

from connectors.warehouse.changes import writer_epoch
from services.identity import _replace_changed_links
from tests.services.population import add_people, define_audience, person, set_contact
from tests.services.test_sync import ledger, run


def watermark(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "select since_epoch from activation.sync_watermarks where audience = 'flu'"
    ).fetchone()
    return row[0] if row else None


def test_an_unchanged_run_digests_no_vault_row_and_a_stamped_change_is_found(conn, cipher, sandbox):
    add_people(conn, cipher, range(30))
    define_audience(conn, "flu", "treatment", range(30))
    engine = sandbox()
    first = run(conn, engine, cipher)
    assert first.added == 30 and watermark(conn) is not None
    set_contact(conn, cipher, 7, "given_name", "Renamed")
    conn.commit()
    second = run(conn, engine, cipher)
    assert (second.unchanged, second.updated) == (29, 1)
    third = run(conn, engine, cipher)
    assert (third.unchanged, third.updated, third.added) == (30, 0, 0)


def test_a_write_in_flight_while_a_sync_runs_is_found_by_the_next_run(
    conn, sync_db, cipher, sandbox
):
    add_people(conn, cipher, range(10))
    define_audience(conn, "flu", "treatment", range(10))
    engine = sandbox()
    run(conn, engine, cipher)
    before = watermark(conn)
    with sync_db.connect() as writer:
        # A load holding the change clock: stamped with the epoch the last run started.
        set_contact(writer, cipher, 4, "given_name", "Late")
        during = run(conn, engine, cipher)
        assert during.updated == 0  # not committed yet: invisible to this run
        assert watermark(conn) == before  # so this run may not move past it
        writer.commit()
    after = run(conn, engine, cipher)
    assert after.updated == 1
    assert [row[:3] for row in ledger(conn, "operation = 'update'")] == [
        (person(4), "update", "acked")
    ]


def test_a_person_who_gains_a_source_subject_is_digested_again(conn, cipher, sandbox):
    add_people(conn, cipher, range(6))
    # A newer address under a subject nobody is linked to yet, written before the first sync.
    version, blob = cipher.encrypt("s-new-crm", "email", "second.address@example.org")
    conn.execute(
        "insert into vault.contact_fields (subject_token, column_name, key_version, ciphertext,"
        " effective_at, change_epoch) values ('s-new-crm', 'email', %s, %s,"
        " now() + interval '1 day', %s)",
        (version, blob, writer_epoch(conn)),
    )
    conn.commit()
    define_audience(conn, "flu", "treatment", range(6))
    engine = sandbox()
    assert run(conn, engine, cipher).added == 6
    # Identity resolution links it to person 2: no vault row changes, one link does.
    with conn.transaction():
        conn.execute(
            "create temp table xref_new on commit drop as"
            " select subject_token, person_token from landing.person_xref"
            " union all select 's-new-crm', %s",
            (person(2),),
        )
        _replace_changed_links(conn)
    assert conn.execute("select person_token from landing.person_changes").fetchall() == [
        (person(2),)
    ]
    result = run(conn, engine, cipher)
    assert (result.updated, result.unchanged) == (1, 5)
    assert [row[:2] for row in ledger(conn, "operation = 'update'")] == [(person(2), "update")]


def test_a_rejected_update_is_retried_while_nothing_else_changes(conn, cipher, sandbox):
    add_people(conn, cipher, range(8))
    define_audience(conn, "flu", "treatment", range(8))
    engine = sandbox()
    run(conn, engine, cipher)
    # Passes the hub's address check but not the engine's (consecutive dots).
    set_contact(conn, cipher, 3, "email", "bad..dots@example.org")
    conn.commit()
    assert run(conn, engine, cipher, max_reject_share=1.0).rejected == 1
    again = run(conn, engine, cipher, max_reject_share=1.0)
    assert (again.rejected, again.unchanged) == (1, 7)
    set_contact(conn, cipher, 3, "email", "fixed@example.org")
    conn.commit()
    assert run(conn, engine, cipher).updated == 1


def test_declaring_another_field_digests_every_member_again(conn, cipher, sandbox):
    add_people(conn, cipher, range(5))
    for i in range(5):
        set_contact(conn, cipher, i, "family_name", f"Family{i}")  # long before the sync
    conn.commit()
    define_audience(conn, "flu", "treatment", range(5))
    engine = sandbox()
    run(conn, engine, cipher)
    define_audience(conn, "flu", "treatment", range(5), fields=("given_name", "family_name"))
    conn.commit()
    result = run(conn, engine, cipher)
    assert (result.updated, result.unchanged) == (5, 0)

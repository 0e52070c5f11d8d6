"""An incremental sync reads only what its writers stamped as changed since its last run
(connectors/warehouse/changes.py), and still misses nothing: a write in flight while it
runs, a person who gained a source subject, a rejected update, a newly declared field, a
consent digest dbt rewrote, another purpose."""

from __future__ import annotations

import datetime as dt

import psycopg

import services.sync as sync_module
from connectors.warehouse.changes import writer_epoch
from services.approvals import approve
from services.identity import _replace_changed_links
from services.sync import sync_audiences
from tests.services.conftest import client
from tests.services.population import add_people, define_audience, person, revoke, set_contact
from tests.services.test_sync import TODAY, ledger, run


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


def exclusion_times(conn: psycopg.Connection) -> dict[str, object]:
    return dict(
        conn.execute(
            "select person_token, excluded_at from activation.sync_exclusions"
            " where audience = 'flu'"
        ).fetchall()
    )


def test_an_excluded_member_is_counted_again_without_being_read_until_consent_changes(
    conn, cipher, sandbox
):
    add_people(conn, cipher, range(6))
    revoke(conn, 3, "treatment", TODAY - dt.timedelta(days=1))
    define_audience(conn, "flu", "treatment", range(6))
    engine = sandbox()
    first = run(conn, engine, cipher)
    assert first.added == 5 and first.excluded_by_reason == {"revoked": 1}
    remembered = exclusion_times(conn)
    assert list(remembered) == [person(3)]
    second = run(conn, engine, cipher)
    assert second.excluded_by_reason == {"revoked": 1} and second.unchanged == 5
    assert exclusion_times(conn) == remembered  # counted, not gated again
    conn.execute(
        "insert into intermediate.int_consent_events (person_token, purpose, event_type,"
        " effective_on, source_ref) values (%s, 'treatment', 'permit', %s, 'renewed')",
        (person(3), TODAY),
    )
    conn.commit()
    third = run(conn, engine, cipher)
    assert third.added == 1 and not third.excluded_by_reason


def test_an_exclusion_is_not_reused_past_the_day_its_decision_holds(conn, cipher, sandbox):
    add_people(conn, cipher, range(4), purposes=())  # opted in, no treatment permit yet
    conn.execute(
        "insert into intermediate.int_consent_events (person_token, purpose, event_type,"
        " effective_on, source_ref) values (%s, 'marketing', 'permit', %s, 'from-tomorrow')",
        (person(2), TODAY + dt.timedelta(days=1)),
    )
    conn.commit()
    define_audience(conn, "news", "marketing", range(4))
    engine = sandbox()
    approve(conn, "news", "tester", "test")
    today = run(conn, engine, cipher, audience="news")
    assert today.added == 0 and sum(today.excluded_by_reason.values()) == 4
    again = run(conn, engine, cipher, audience="news")
    assert again.added == 0 and sum(again.excluded_by_reason.values()) == 4
    tomorrow = run(conn, engine, cipher, audience="news", day=TODAY + dt.timedelta(days=1))
    assert tomorrow.added == 1 and sum(tomorrow.excluded_by_reason.values()) == 3


def test_a_member_without_an_address_is_not_decrypted_again_until_its_vault_rows_change(
    conn, cipher, sandbox
):
    add_people(conn, cipher, range(5))
    conn.execute(
        "delete from vault.contact_fields where subject_token = %s and column_name = 'email'",
        (f"s-{person(1)}",),
    )
    conn.commit()
    define_audience(conn, "flu", "treatment", range(5))
    engine = sandbox()
    assert run(conn, engine, cipher).excluded_by_reason == {"no_email": 1}
    audits = conn.execute("select max(audit_id) from audit.events").fetchone()[0]
    second = run(conn, engine, cipher)
    assert second.excluded_by_reason == {"no_email": 1}
    decrypted = conn.execute(
        "select count(*) from audit.events where action = 'vault_decrypt' and audit_id > %s",
        (audits,),
    ).fetchone()[0]
    assert decrypted == 0
    set_contact(conn, cipher, 1, "email", "found@example.org")
    conn.commit()
    third = run(conn, engine, cipher)
    assert third.added == 1 and not third.excluded_by_reason


def test_consent_is_compared_only_for_members_whose_digest_was_stamped_since(conn, cipher, sandbox):
    add_people(conn, cipher, range(8))
    define_audience(conn, "flu", "treatment", range(8))
    engine = sandbox()
    assert run(conn, engine, cipher).added == 8
    # A digest rewritten under an epoch the last run had already seen: proof the run trusts
    # the stamps (a writer that stamps honestly never does this).
    conn.execute(
        "update intermediate.int_consent_digests set events_digest = 'rewritten',"
        " change_epoch = change_epoch - 1 where person_token = %s",
        (person(2),),
    )
    conn.commit()
    assert run(conn, engine, cipher).unchanged == 8
    revoke(conn, 5, "treatment", TODAY)  # stamped as dbt stamps it
    result = run(conn, engine, cipher)
    assert (result.removed, result.unchanged) == (1, 7)
    assert result.excluded_by_reason == {"revoked": 1}


def test_a_purpose_change_compares_every_member_again(conn, cipher, sandbox):
    add_people(conn, cipher, range(3), purposes=("treatment",))
    add_people(conn, cipher, range(3, 6))  # these also permit marketing
    define_audience(conn, "flu", "treatment", range(6))
    engine = sandbox()
    assert run(conn, engine, cipher).added == 6
    define_audience(conn, "flu", "marketing", range(6))  # nobody's consent events changed
    approve(conn, "flu", "reviewer", "now a campaign", destination="sandbox")
    result = run(conn, engine, cipher)
    assert result.removed == 3 and result.excluded_by_reason == {"no_authorization": 3}
    assert set(client(engine).list_member_ids("flu")) == {person(i) for i in range(3, 6)}


def test_audiences_synced_in_one_window_share_its_lookups_and_miss_no_write(
    conn, sync_db, cipher, sandbox
):
    add_people(conn, cipher, range(10))
    define_audience(conn, "flu", "treatment", range(10))
    define_audience(conn, "checkup", "treatment", range(10))
    engine = sandbox()

    def one_pass():
        return sync_audiences(
            conn, client(engine), cipher, ["flu", "checkup"], destination="sandbox", day=TODAY
        )

    assert [r.added for r in one_pass()] == [10, 10]
    set_contact(conn, cipher, 3, "given_name", "Changed")
    conn.commit()
    runs = one_pass()
    first = next(runs)  # finds person 3 for both audiences of the window
    with sync_db.connect() as writer:  # committed after the window looked
        set_contact(writer, cipher, 5, "given_name", "Between")
        writer.commit()
    second = next(runs)
    assert [first.updated, second.updated] == [1, 1]
    assert [r.updated for r in one_pass()] == [1, 1]  # person 5, for both
    assert [(r.updated, r.unchanged) for r in one_pass()] == [(0, 10), (0, 10)]
    updates = ledger(conn, "operation = 'update'")
    assert sorted((p, op) for p, op, *_ in updates) == [
        (person(3), "update"),
        (person(3), "update"),
        (person(5), "update"),
        (person(5), "update"),
    ]


def test_a_pass_that_adds_many_members_refreshes_the_statistics_the_next_plans_use(
    conn, cipher, sandbox, monkeypatch
):
    monkeypatch.setattr(sync_module, "ANALYZE_AFTER", 5)
    add_people(conn, cipher, range(6))
    define_audience(conn, "flu", "treatment", range(6))
    engine = sandbox()

    def planned_rows() -> float:
        return conn.execute(
            "select reltuples from pg_class where oid = 'activation.sync_state'::regclass"
        ).fetchone()[0]

    [result] = sync_audiences(
        conn, client(engine), cipher, ["flu"], destination="sandbox", day=TODAY
    )
    assert result.added == 6 and planned_rows() == 6
    define_audience(conn, "flu", "treatment", range(3))
    [result] = sync_audiences(
        conn, client(engine), cipher, ["flu"], destination="sandbox", day=TODAY
    )
    assert result.removed == 3 and planned_rows() == 6  # fewer than 5 written: not analysed


def test_the_gate_reads_the_events_dbt_keeps_beside_each_digest(conn, cipher, sandbox):
    """The member query takes a member's consent events from int_consent_digests, as dbt
    wrote them with the digest, instead of aggregating int_consent_events again."""
    add_people(conn, cipher, range(3))
    define_audience(conn, "flu", "treatment", range(3))
    conn.execute(
        "update intermediate.int_consent_digests set events = %s where person_token = %s",
        ('[["deny", "2025-01-01", "treatment", null, "kept-deny"]]', person(1)),
    )
    conn.commit()
    result = run(conn, sandbox(), cipher)
    assert result.added == 2 and result.excluded_by_reason == {"denied": 1}


def test_members_without_kept_events_are_gated_on_their_modelled_events(conn, cipher, sandbox):
    """Digest rows written before dbt kept the events (null), or a table without the column
    at all: the events are aggregated from int_consent_events as they were before."""
    add_people(conn, cipher, range(4))
    define_audience(conn, "flu", "treatment", range(4))
    revoke(conn, 2, "treatment", TODAY - dt.timedelta(days=1))
    conn.execute("update intermediate.int_consent_digests set events = null")
    conn.commit()
    engine = sandbox()
    first = run(conn, engine, cipher)
    assert first.added == 3 and first.excluded_by_reason == {"revoked": 1}
    conn.execute("alter table intermediate.int_consent_digests rename events to events_later")
    try:
        second = run(conn, engine, cipher, destination="other")
        assert second.added == 3 and second.excluded_by_reason == {"revoked": 1}
    finally:
        conn.rollback()
        conn.execute("alter table intermediate.int_consent_digests rename events_later to events")
        conn.commit()


def test_a_live_suppression_counts_beside_the_kept_events(conn, cipher, sandbox):
    """A suppression the engine reported after dbt ran (not in the kept events) still gates."""
    add_people(conn, cipher, range(3))
    define_audience(conn, "flu", "treatment", range(3))
    conn.execute(
        "insert into engagement.suppressions (event_id, destination, person_token, event_type,"
        " effective_at) values ('evt-bounce-0', 'sandbox', %s, 'hard_bounce', %s)",
        (person(0), dt.datetime(2025, 1, 2, tzinfo=dt.UTC)),
    )
    conn.commit()
    result = run(conn, sandbox(), cipher)
    assert result.added == 2 and result.excluded_by_reason == {"hard_bounced": 1}

"""The diff sync against the real SANDBOX engine over HTTPS: exactly once, consent at push
time, retries of rejected rows, review before first send, minimum necessary."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import services.sync as sync_module
from domain.sync_diff import SYNC_MODES, diff_membership
from sandbox.engine import DB_FILE
from services.approvals import approve
from services.sync import diff_in_sql, sync_audience
from tests.services.conftest import client
from tests.services.population import (
    add_people,
    define_audience,
    email_of,
    person,
    revoke,
    set_contact,
    unsubscribe,
)

TODAY = dt.date(2026, 3, 2)


def sent_counts(engine) -> Counter:
    api = client(engine)
    counts: Counter = Counter()
    cursor = None
    while True:
        page = api.events(cursor, 1000)
        if not page.events:
            return counts
        counts.update(e.external_id for e in page.events if e.type == "sent")
        cursor = page.next_cursor


def run(conn, engine, cipher, audience="flu", **kwargs):
    options = {"destination": "sandbox", "audience": audience, "day": TODAY, **kwargs}
    return sync_audience(conn, client(engine), cipher, **options)


def ledger(conn, *where: str) -> list[tuple]:
    sql = "select person_token, operation, status, error_code from activation.ledger"
    if where:
        sql += " where " + " and ".join(where)
    return conn.execute(sql + " order by ledger_id").fetchall()


def test_second_sync_with_no_changes_pushes_nothing(conn, cipher, sandbox):
    add_people(conn, cipher, range(120))
    define_audience(conn, "flu", "treatment", range(120))
    engine = sandbox()

    first = run(conn, engine, cipher, batch_size=50, concurrency=2)
    assert (first.added, first.updated, first.removed, first.status) == (120, 0, 0, "succeeded")
    assert first.batches == 3
    rows_after_first = len(ledger(conn))

    second = run(conn, engine, cipher, batch_size=50)
    assert (second.added, second.updated, second.removed) == (0, 0, 0)
    assert len(ledger(conn)) == rows_after_first  # nothing even written to the ledger
    assert sorted(client(engine).list_member_ids("flu")) == [person(i) for i in range(120)]
    assert set(sent_counts(engine).values()) == {1}


def test_a_run_gives_the_callers_connection_back_with_its_settings(conn, cipher, sandbox):
    """A run makes its own commits lazy and its sorts large (services/sync.py); the caller's
    session gets its own settings back, so its later commits are durable again."""
    add_people(conn, cipher, range(10))
    define_audience(conn, "flu", "treatment", range(10))
    before = conn.execute("select current_setting('work_mem')").fetchone()
    conn.commit()
    assert run(conn, sandbox(), cipher).added == 10
    settings = conn.execute(
        "select current_setting('synchronous_commit'), current_setting('work_mem')"
    ).fetchone()
    assert settings == ("on", *before)


def test_a_run_gives_its_temp_tables_room_on_a_connection_that_has_used_none(
    conn, sync_db, cipher, sandbox
):
    """Temp buffers can be set only before a session's first temp table: a run sets them on
    a fresh connection, and runs on a connection with temp tables go on without them."""
    add_people(conn, cipher, range(5))
    define_audience(conn, "flu", "treatment", range(5))
    conn.commit()
    engine = sandbox()
    with sync_db.connect() as fresh:
        default = fresh.execute("select current_setting('temp_buffers')").fetchone()
        assert run(fresh, engine, cipher).added == 5
        assert fresh.execute("select current_setting('temp_buffers')").fetchone() == ("256MB",)
        set_contact(conn, cipher, 1, "email", "p1@new-host.example")
        conn.commit()
        assert run(fresh, engine, cipher).updated == 1  # its temp tables exist by now
    assert default != ("256MB",)


def test_changed_field_is_an_update_and_the_engine_gets_it_once(conn, cipher, sandbox):
    add_people(conn, cipher, range(10))
    define_audience(conn, "flu", "treatment", range(10))
    engine = sandbox()
    run(conn, engine, cipher)
    set_contact(conn, cipher, 3, "given_name", "Renamed")
    conn.commit()
    result = run(conn, engine, cipher)
    assert (result.added, result.updated, result.removed) == (0, 1, 0)
    assert ledger(conn, "operation = 'update'") == [(person(3), "update", "acked", None)]


def test_only_changed_members_leave_the_database_and_are_decrypted(conn, cipher, sandbox):
    add_people(conn, cipher, range(40))
    define_audience(conn, "flu", "treatment", range(40))
    engine = sandbox()
    run(conn, engine, cipher)
    set_contact(conn, cipher, 5, "given_name", "Renamed")
    revoke(conn, 9, "treatment", TODAY)  # a consent change alone is a change too
    conn.commit()
    audits = conn.execute("select coalesce(max(audit_id), 0) from audit.events").fetchone()[0]
    result = run(conn, engine, cipher)
    assert (result.unchanged, result.updated, result.removed) == (38, 1, 1)
    decrypted = conn.execute(
        "select coalesce(sum(row_count), 0) from audit.events"
        " where action = 'vault_decrypt' and audit_id > %s",
        (audits,),
    ).fetchone()[0]
    assert decrypted == 1  # the renamed person only: the revoked one is gated out first
    assert person(9) not in client(engine).list_member_ids("flu")


def test_probing_and_scanning_the_vault_push_the_same_payloads(conn, cipher, sandbox, monkeypatch):
    """The member query reads the vault member by member or in one scan, by how many members
    changed (services/sync.py); both must find the same ciphertexts and digests."""
    add_people(conn, cipher, range(30))
    define_audience(conn, "flu", "treatment", range(30))
    engine = sandbox()

    def both_ways() -> list:
        for destination, probes_per_scan in (("probed", 0), ("scanned", 10**9)):
            monkeypatch.setattr(sync_module, "_PROBES_PER_SCAN", probes_per_scan)
            run(conn, engine, cipher, destination=destination)
        return [
            conn.execute(
                "select person_token, payload_hash, source_fingerprint from activation.sync_state"
                " where destination = %s order by person_token",
                (destination,),
            ).fetchall()
            for destination in ("probed", "scanned")
        ]

    probed, scanned = both_ways()
    assert len(probed) == 30 and probed == scanned
    set_contact(conn, cipher, 7, "given_name", "Renamed")
    conn.commit()
    probed, scanned = both_ways()
    assert probed == scanned and probed != []


def test_the_newest_value_of_each_field_across_a_persons_sources_is_pushed(
    conn, cipher, sandbox, monkeypatch
):
    """The member query sends only the newest ciphertext of each declared field (the one
    decrypted); whichever way it reads the vault, that is what is pushed, and the digest
    still covers every row."""
    add_people(conn, cipher, range(4))
    # Person 1 has two more source subjects: one older, one newer than the seeded values.
    for subject, age, email in (("s-old", "-2 days", "old@example.org"),
                                ("s-new", "+1 day", "new@example.org")):  # fmt: skip
        conn.execute(
            "insert into landing.person_xref (subject_token, person_token) values (%s, %s)",
            (subject, person(1)),
        )
        for column, value in (("email", email), ("given_name", f"Name-{subject}")):
            version, blob = cipher.encrypt(subject, column, value)
            conn.execute(
                "insert into vault.contact_fields (subject_token, column_name, key_version,"
                " ciphertext, effective_at) values (%s, %s, %s, %s, now() + %s::interval)",
                (subject, column, version, blob, age),
            )
    conn.commit()
    define_audience(conn, "flu", "treatment", range(4))
    audited = conn.execute("select coalesce(max(audit_id), 0) from audit.events").fetchone()[0]
    for destination, probes_per_scan in (("probed", 0), ("scanned", 10**9)):
        monkeypatch.setattr(sync_module, "_PROBES_PER_SCAN", probes_per_scan)
        engine = sandbox()
        assert run(conn, engine, cipher, destination=destination, audience="flu").added == 4
        with sqlite3.connect(engine.state_dir / DB_FILE) as sandbox_db:
            pushed = sandbox_db.execute(
                "select email, fields_json from members where external_id = ?", (person(1),)
            ).fetchall()
        assert pushed == [("new@example.org", '{"given_name":"Name-s-new"}')]
    decrypted = conn.execute(
        "select sum(row_count) from audit.events where action = 'vault_decrypt' and audit_id > %s",
        (audited,),
    ).fetchone()[0]
    assert decrypted == 8  # 4 people, twice: one value per field each time
    prints = conn.execute(
        "select destination, source_fingerprint from activation.sync_state"
        " where person_token = %s order by destination",
        (person(1),),
    ).fetchall()
    assert prints[0][1] == prints[1][1] and prints[0][1].startswith("6:")  # all six rows


def test_revoked_consent_removes_exactly_that_person(conn, cipher, sandbox):
    add_people(conn, cipher, range(30))
    define_audience(conn, "reengage", "marketing", range(30))
    approve(conn, "reengage", "reviewer", "win-back copy checked", destination="sandbox")
    engine = sandbox()
    assert run(conn, engine, cipher, audience="reengage").added == 30

    revoke(conn, 7, "marketing", TODAY)  # FHIR Consent / CRM deny, as dbt models it
    unsubscribe(conn, 11, dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC))  # engine feedback, live
    result = run(conn, engine, cipher, audience="reengage")

    assert (result.added, result.updated, result.removed) == (0, 0, 2)
    assert result.excluded_by_reason == {"revoked": 1, "unsubscribed": 1}
    remaining = set(client(engine).list_member_ids("reengage"))
    assert remaining == {person(i) for i in range(30)} - {person(7), person(11)}
    removed = ledger(conn, "operation = 'remove'")
    assert sorted(removed) == [
        (person(7), "remove", "acked", None),
        (person(11), "remove", "acked", None),
    ]


def test_upsert_mode_keeps_leavers_but_removes_whoever_lost_consent(conn, cipher, sandbox):
    add_people(conn, cipher, range(10))
    define_audience(conn, "flu", "treatment", range(10))
    engine = sandbox()
    run(conn, engine, cipher, mode="upsert")
    define_audience(conn, "flu", "treatment", range(2, 10))  # 0 and 1 leave the segment
    revoke(conn, 1, "treatment", TODAY)  # and 1 also denies treatment messages
    result = run(conn, engine, cipher, mode="upsert")
    assert result.removed == 1
    assert set(client(engine).list_member_ids("flu")) == {person(i) for i in range(10)} - {
        person(1)
    }


def test_engine_failing_five_percent_still_delivers_every_member_once(conn, cipher, sandbox):
    add_people(conn, cipher, range(400))
    define_audience(conn, "flu", "treatment", range(400))
    engine = sandbox(fail_rate=0.05, seed=3)
    result = run(conn, engine, cipher, batch_size=20, concurrency=2)
    assert result.added == 400 and result.rejected == 0
    assert sorted(client(engine).list_member_ids("flu")) == [person(i) for i in range(400)]
    sends = sent_counts(engine)
    assert len(sends) == 400 and set(sends.values()) == {1}
    assert not ledger(conn, "status = 'pending'")


def test_rejected_rows_are_retried_next_run_and_a_high_share_alerts(conn, cipher, sandbox):
    add_people(conn, cipher, range(10))
    # Passes the hub's address check but not the engine's (consecutive dots).
    set_contact(conn, cipher, 4, "email", "bad..dots@example.org")
    conn.commit()
    define_audience(conn, "flu", "treatment", range(10))
    engine = sandbox()

    first = run(conn, engine, cipher, max_reject_share=0.05)
    assert (first.added, first.rejected, first.status) == (9, 1, "alert")
    assert first.rejected_by_code == {"ENGINE_REJECTED": 1}
    status, share = conn.execute(
        "select status, reject_share from activation.sync_runs where run_id = %s",
        (first.run_id,),
    ).fetchone()
    assert status == "alert" and share == pytest.approx(0.1)

    second = run(conn, engine, cipher, max_reject_share=1.0)  # retried by itself
    assert (second.added, second.rejected, second.status) == (0, 1, "succeeded")
    set_contact(conn, cipher, 4, "email", email_of(4))
    conn.commit()
    third = run(conn, engine, cipher)
    assert (third.added, third.rejected) == (1, 0)
    assert [row[2:] for row in ledger(conn, f"person_token = '{person(4)}'")] == [
        ("rejected", "ENGINE_REJECTED"),
        ("rejected", "ENGINE_REJECTED"),
        ("acked", None),
    ]


def test_marketing_audience_needs_approval_and_a_definition_change_voids_it(conn, cipher, sandbox):
    add_people(conn, cipher, range(12))
    define_audience(conn, "reengage", "marketing", range(12))
    engine = sandbox()

    blocked = run(conn, engine, cipher, audience="reengage")
    assert (blocked.status, blocked.blocked_reason) == ("blocked", "SYNC_APPROVAL_REQUIRED")
    assert blocked.added == 0 and blocked.held_back == 12
    assert client(engine).list_member_ids("reengage") == []

    approve(conn, "reengage", "jane.reviewer", "copy and audience reviewed")
    assert run(conn, engine, cipher, audience="reengage").added == 12

    # A new personalization field changes the definition: the approval is void, and while
    # it is, people who leave are still removed but nobody new is added.
    define_audience(conn, "reengage", "marketing", range(1, 14), fields=("given_name", "city"))
    add_people(conn, cipher, range(12, 14))
    held = run(conn, engine, cipher, audience="reengage")
    assert (held.status, held.added, held.removed) == ("blocked", 0, 1)
    voided = conn.execute(
        "select void_reason from activation.approvals where voided_at is not null"
    ).fetchall()
    assert voided == [("definition_changed",)]
    actions = {a for (a,) in conn.execute("select action from audit.events")}
    assert {"approve_audience", "void_approval"} <= actions

    approve(conn, "reengage", "jane.reviewer", "added the city field")
    assert run(conn, engine, cipher, audience="reengage").added == 2


def test_dlp_refuses_a_payload_carrying_an_undeclared_identifier(conn, cipher, sandbox):
    add_people(conn, cipher, range(5))
    set_contact(conn, cipher, 2, "given_name", "call me 555-123-4567")
    conn.commit()
    define_audience(conn, "flu", "treatment", range(5))
    engine = sandbox()
    result = run(conn, engine, cipher)
    assert result.added == 4 and result.excluded_by_reason == {"dlp_refused": 1}
    assert person(2) not in client(engine).list_member_ids("flu")
    assert not ledger(conn, f"person_token = '{person(2)}'")


def test_dry_run_is_kept_with_exclusions_by_reason_and_pushes_nothing(conn, cipher, sandbox):
    add_people(conn, cipher, range(8))
    add_people(conn, cipher, range(8, 10), purposes=())  # no authorization at all
    define_audience(conn, "reengage", "marketing", range(10))
    engine = sandbox()
    preview = run(conn, engine, cipher, audience="reengage", dry_run=True)
    assert (preview.added, preview.excluded) == (8, 2)
    stored = conn.execute(
        "select dry_run, added, excluded_by_reason from activation.sync_runs where run_id = %s",
        (preview.run_id,),
    ).fetchone()
    assert stored == (True, 8, {"no_authorization": 2})
    assert not ledger(conn)
    assert "@" not in json.dumps(preview.as_dict())


def test_recipient_domains_keep_the_domain_only(conn, cipher, sandbox):
    add_people(conn, cipher, range(3))
    set_contact(conn, cipher, 1, "email", "Someone@Clinic-Mail.EXAMPLE")
    conn.commit()
    define_audience(conn, "flu", "treatment", range(3))
    run(conn, sandbox(), cipher)
    domains = dict(conn.execute("select person_token, domain from activation.recipient_domains"))
    assert domains == {
        person(0): "example.org",
        person(1): "clinic-mail.example",
        person(2): "example.org",
    }
    # Pushed again (to another audience), a new address at another domain replaces the
    # domain, and a known domain is not even locked: its row keeps no locker's xmax.
    set_contact(conn, cipher, 2, "email", "p2@new-host.example")
    conn.commit()
    define_audience(conn, "flu_again", "treatment", range(3))
    assert run(conn, sandbox(), cipher, audience="flu_again").added == 3
    rows = {
        p: (domain, unlocked)
        for p, domain, unlocked in conn.execute(
            "select person_token, domain, xmax::text::bigint = 0 from activation.recipient_domains"
        )
    }
    assert rows[person(2)][0] == "new-host.example"
    assert rows[person(0)] == ("example.org", True)


def test_a_second_sync_of_the_same_audience_waits_its_turn(conn, sync_db, cipher, sandbox):
    add_people(conn, cipher, range(3))
    define_audience(conn, "flu", "treatment", range(3))
    engine = sandbox()
    with sync_db.connect() as other:
        other.execute("select pg_advisory_lock(7262006, hashtext('sandbox/flu'))")
        with pytest.raises(RuntimeError, match="another sync"):
            run(conn, engine, cipher)
        other.execute("select pg_advisory_unlock(7262006, hashtext('sandbox/flu'))")
    assert run(conn, engine, cipher).added == 3


def test_a_plaintext_engine_url_is_refused():
    from connectors.email.http_api import HttpEngine

    with pytest.raises(ValueError, match="plaintext"):
        HttpEngine("http://127.0.0.1:8443", "t", "s")


# --- the SQL diff keeps domain/sync_diff.py's semantics --------------------------------------

hashes = st.sampled_from(["h1", "h2", "h3"])
people = st.dictionaries(st.sampled_from([f"p{i}" for i in range(12)]), hashes, max_size=12)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(wanted=people, synced=people, mode=st.sampled_from(SYNC_MODES))
def test_sql_diff_matches_the_domain_diff(conn, wanted, synced, mode):
    conn.execute("delete from activation.sync_state where audience = 'prop'")
    with conn.cursor() as cur:
        cur.executemany(
            "insert into activation.sync_state (destination, audience, person_token,"
            " payload_hash) values ('d', 'prop', %s, %s)",
            list(synced.items()),
        )
    conn.commit()
    expected = diff_membership(wanted, synced, mode)
    got = diff_in_sql(conn, "d", "prop", wanted, mode, chunk_size=5)
    assert (got.adds, got.updates, got.removes, got.unchanged) == (
        expected.adds,
        expected.updates,
        expected.removes,
        expected.unchanged,
    )


def test_an_unchanged_member_is_skipped_but_never_past_an_authorization_expiry(
    conn, cipher, sandbox
):
    add_people(conn, cipher, range(6), purposes=())
    for i in range(6):  # marketing permits; person 2's expires on March 5
        expires = dt.date(2026, 3, 5) if i == 2 else None
        conn.execute(
            "insert into intermediate.int_consent_events (person_token, purpose, event_type,"
            " effective_on, expires_on, source_ref) values (%s, 'marketing', 'permit',"
            " '2025-01-01', %s, %s)",
            (person(i), expires, f"auth-{i}"),
        )
    conn.commit()
    define_audience(conn, "reengage", "marketing", range(6))
    approve(conn, "reengage", "reviewer", "ok")
    engine = sandbox()
    first = run(conn, engine, cipher, audience="reengage", day=dt.date(2026, 3, 1))
    assert first.added == 6
    audits = conn.execute("select count(*) from audit.events").fetchone()[0]
    same = run(conn, engine, cipher, audience="reengage", day=dt.date(2026, 3, 5))
    assert (same.unchanged, same.removed) == (6, 0)
    decrypts = conn.execute(
        "select count(*) from audit.events where action = 'vault_decrypt' and audit_id > %s",
        (audits,),
    ).fetchone()[0]
    assert decrypts == 0  # nothing changed: nothing decrypted
    later = run(conn, engine, cipher, audience="reengage", day=dt.date(2026, 3, 6))
    assert (later.unchanged, later.removed, later.excluded_by_reason) == (5, 1, {"expired": 1})
    assert person(2) not in client(engine).list_member_ids("reengage")


def test_a_member_listed_twice_is_synced_once(conn, cipher, sandbox):
    add_people(conn, cipher, range(4))
    define_audience(conn, "flu", "treatment", range(4))
    # A dbt build whose uniqueness test failed and went on (the stand-in has a key: drop it).
    conn.execute("alter table marts.audience_membership drop constraint audience_membership_pkey")
    try:
        conn.execute(
            "insert into marts.audience_membership (audience, person_token, purpose)"
            " values ('flu', %s, 'treatment')",
            (person(2),),
        )
        conn.commit()
        engine = sandbox()
        result = run(conn, engine, cipher)
        assert (result.added, result.updated) == (4, 0)
        assert sorted(client(engine).list_member_ids("flu")) == [person(i) for i in range(4)]
        assert sorted(p for p, *_ in ledger(conn, "operation = 'add'")) == [
            person(i) for i in range(4)
        ]
    finally:
        conn.rollback()
        conn.execute(
            "delete from marts.audience_membership where ctid not in (select min(ctid)"
            " from marts.audience_membership group by audience, person_token)"
        )
        conn.execute(
            "alter table marts.audience_membership add primary key (audience, person_token)"
        )
        conn.commit()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    wanted=st.sets(st.sampled_from([f"p{i}" for i in range(12)]), max_size=12),
    synced=st.sets(st.sampled_from([f"p{i}" for i in range(12)]), max_size=12),
    since=st.sampled_from([None, 1, 10**6]),
)
def test_the_candidates_pass_picks_every_leaver_and_every_member_never_synced(
    conn, wanted, synced, since
):
    """Step 4's one pass over members and sync_state (services/sync.py) counts the members
    and yields exactly the leavers the removes need, and every member sync_state does not
    hold, watermark or not."""
    conn.execute("delete from activation.sync_state where audience = 'prop'")
    conn.execute("delete from marts.audience_membership where audience = 'prop'")
    for p in wanted:
        conn.execute(
            "insert into marts.audience_membership (audience, person_token, purpose)"
            " values ('prop', %s, 'treatment')",
            (p,),
        )
    for p in synced:  # vouched for, consent unchanged and valid for long
        conn.execute(
            "insert into activation.sync_state (destination, audience, person_token,"
            " payload_hash, source_fingerprint, consent_fingerprint, consent_valid_until)"
            " values ('d', 'prop', %s, 'h', 's', 'treatment:0:/0:', '2999-01-01')",
            (p,),
        )
    params = {
        "audience": "prop",
        "destination": "d",
        "purpose": "treatment",
        "columns": ["email"],
        "day": TODAY,
        "decrypt": True,
        "since": since,
        "no_suppressions": "%" + sync_module._NO_SUPPRESSIONS,
    }
    sync_module.find_touched(conn, None, since, ["email"])
    members, _, _ = sync_module._load_changed(conn, params)
    leavers = {p for (p,) in conn.execute(sync_module.SYNC_LEAVERS)}
    never_synced = {
        p
        for (p,) in conn.execute(
            "select person_token from sync_candidates where member and not synced"
        )
    }
    conn.rollback()
    assert members == len(wanted)
    assert leavers == synced - wanted
    assert never_synced == wanted - synced

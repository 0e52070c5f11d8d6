-- Warehouse schemas other than landing (whose tables derive from the field policy).
-- Idempotent: safe to run at every start.

create schema if not exists landing;
create schema if not exists quarantine;
create schema if not exists vault;
create schema if not exists activation;
create schema if not exists engagement;
create schema if not exists audit;

-- One row per loaded source file: the manifest that makes re-runs skip what is loaded.
create table if not exists landing.source_files (
    file_id bigserial primary key,
    uri text not null,
    source text not null,
    size_bytes bigint not null,
    sha256 text not null,
    records_read bigint not null default 0,
    records_loaded bigint not null default 0,
    records_quarantined bigint not null default 0,
    loaded_at timestamptz not null default now(),
    -- the loading transaction: what the consent sensor reads by (commit_cursor.py)
    xact_id xid8 not null default pg_current_xact_id(),
    unique (source, sha256)
);

-- Identity resolution output: every source subject and the person it belongs to.
create table if not exists landing.person_xref (
    subject_token text primary key,
    person_token text not null,
    resolved_at timestamptz not null default now()
);
create index if not exists person_xref_person on landing.person_xref (person_token);

create table if not exists quarantine.records (
    quarantine_id bigserial primary key,
    file_id bigint not null references landing.source_files (file_id),
    source text not null,
    position text not null,
    entity text,
    reason text not null,
    message text not null,  -- PHI-free by construction: names fields, never values
    payload_key_version integer,
    payload bytea,  -- the raw record, AES-GCM encrypted, for replay after a fix
    quarantined_at timestamptz not null default now()
);
-- A replay (after a fix) loads the record as its own one-record "file" and points to it.
alter table quarantine.records add column if not exists replayed_at timestamptz;
alter table quarantine.records add column if not exists replay_file_id bigint;

-- vault.contacts and its view vault.contact_fields: connectors/warehouse/vault_table.py
-- (one column group per vault field of the field policy).

-- One index: resolution reads the keys in (key_type, key_hash) order and the loader's merge
-- needs a unique arbiter. A second index by subject made each new key cost 14.4 us instead
-- of 8.5 (300,000 keys into 3M); the lookups by subject (forget, person lookup of a token)
-- scan instead, ~0.1 s at 3M keys.
create table if not exists vault.identity_keys (
    subject_token text not null,
    key_type text not null,
    key_hash text not null,
    primary key (key_type, key_hash, subject_token)
);
-- Warehouses of earlier versions: their key led with the subject, beside a second index by
-- (key_type, key_hash). Looked up first: no table lock at every start.
do $$
begin
    if (select a.attname from pg_index i
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
        where i.indrelid = 'vault.identity_keys'::regclass and i.indisprimary) = 'subject_token'
    then
        alter table vault.identity_keys drop constraint identity_keys_pkey,
            add primary key (key_type, key_hash, subject_token);
    end if;
    drop index if exists vault.identity_keys_hash;
end;
$$;

create table if not exists activation.sync_runs (
    run_id text primary key,
    destination text not null,
    audience text not null,
    purpose text not null,
    mode text not null,
    dry_run boolean not null,
    evaluated_on date not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    status text not null default 'running',
    added integer not null default 0,
    updated integer not null default 0,
    removed integer not null default 0,
    excluded integer not null default 0,
    rejected integer not null default 0
);

-- What the engine holds, per destination x audience x person: the last acknowledged payload.
create table if not exists activation.sync_state (
    destination text not null,
    audience text not null,
    person_token text not null,
    payload_hash text not null,
    synced_at timestamptz not null default now(),
    primary key (destination, audience, person_token)
);

-- Written before each batch is pushed, acknowledged after: a crash resumes from here.
create table if not exists activation.ledger (
    ledger_id bigserial primary key,
    -- A run's row is written before any of its ledger rows, and retention deletes only runs
    -- without ledger rows, so every run_id names a run. No foreign key checks it: checking
    -- each row made writing the ledger 60% slower (18 against 11 ms per 1,000 rows).
    run_id text not null,
    destination text not null,
    audience text not null,
    batch_key text not null,  -- the idempotency key sent to the engine
    operation text not null,  -- add | update | remove
    person_token text not null,
    purpose text not null,
    consent_ref text,
    payload_hash text,
    status text not null default 'pending',  -- pending | acked | rejected
    error_code text,
    created_at timestamptz not null default now(),
    acked_at timestamptz
-- Every row is updated once, when the engine answers. Half of each page is left free and no
-- index covers status or acked_at, so that update stays on the row's page and touches no
-- index (a HOT update): acknowledging 1,000 members cost 18 ms with an index on status.
) with (fillfactor = 50);

create table if not exists engagement.events (
    event_id text primary key,
    destination text not null,
    audience text,
    person_token text,
    event_type text not null,
    occurred_at timestamptz not null,
    machine_open boolean not null default false,
    bounce_type text,
    received_at timestamptz not null default now()
);

-- Unsubscribes, complaints and hard bounces: read by the send-time consent gate directly, so
-- a suppression takes effect at once, before dbt rebuilds anything.
create table if not exists engagement.suppressions (
    event_id text primary key,
    destination text not null,
    person_token text not null,
    event_type text not null,  -- unsubscribe | hard_bounce | complaint
    effective_at timestamptz not null,
    received_at timestamptz not null default now(),
    -- the writing transaction: what the consent sensor reads by (commit_cursor.py)
    xact_id xid8 not null default pg_current_xact_id()
);
create index if not exists suppressions_person on engagement.suppressions (person_token);
-- Tables of earlier versions get the column once (looked up first: no table lock at every
-- start); their rows all take the id of the transaction that adds it.
do $$
begin
    if not exists (select 1 from information_schema.columns where table_schema = 'landing'
                   and table_name = 'source_files' and column_name = 'xact_id') then
        alter table landing.source_files
            add column xact_id xid8 not null default pg_current_xact_id();
    end if;
    if not exists (select 1 from information_schema.columns where table_schema = 'engagement'
                   and table_name = 'suppressions' and column_name = 'xact_id') then
        alter table engagement.suppressions
            add column xact_id xid8 not null default pg_current_xact_id();
    end if;
end;
$$;
create index if not exists suppressions_xact on engagement.suppressions (xact_id);

create table if not exists engagement.cursors (
    destination text primary key,
    cursor text,
    updated_at timestamptz not null default now()
);

create table if not exists audit.events (
    audit_id bigserial primary key,
    at timestamptz not null default now(),
    actor text not null,
    role text not null,
    purpose text not null,
    action text not null,
    object text not null,
    row_count bigint not null default 0,
    prev_hash text not null,
    hash text not null
);

create or replace function audit.refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'audit.events is append-only';
end;
$$;

drop trigger if exists audit_events_append_only on audit.events;
create trigger audit_events_append_only
    before update or delete or truncate on audit.events
    for each statement execute function audit.refuse_change();

-- Secure send and feedback (issue 6): additive only. Columns, indexes and the view on these
-- busy tables are added only when missing: ALTER TABLE takes an exclusive lock even when
-- the column exists, and every start runs this file.
--   sync_runs: exclusions by reason (dry runs too, for comparison), duration, stale ledger
--     rows settled, why no adds were pushed (blocked_reason), the share of rows the engine
--     rejected ('alert' above the configured share), the segment definition hash.
--   sync_state: what a synced member's payload and consent decision were computed from
--     (hashes and a date only), so an unchanged member is skipped without decrypting it.
--   engagement.events: the recipient's domain (from activation.recipient_domains).
do $$
declare
    spec text[];
begin
    foreach spec slice 1 in array array[
        ['activation', 'sync_runs', 'excluded_by_reason', 'jsonb'],
        ['activation', 'sync_runs', 'seconds', 'double precision'],
        ['activation', 'sync_runs', 'resumed', 'integer not null default 0'],
        ['activation', 'sync_runs', 'blocked_reason', 'text'],
        ['activation', 'sync_runs', 'reject_share', 'double precision'],
        ['activation', 'sync_runs', 'definition_hash', 'text'],
        ['activation', 'sync_runs', 'error_code', 'text'],
        ['activation', 'sync_state', 'source_fingerprint', 'text'],
        ['activation', 'sync_state', 'consent_fingerprint', 'text'],
        ['activation', 'sync_state', 'consent_valid_until', 'date'],
        ['engagement', 'events', 'recipient_domain', 'text']
    ] loop
        if not exists (
            select 1 from information_schema.columns
            where table_schema = spec[1] and table_name = spec[2] and column_name = spec[3]
        ) then
            execute format('alter table %I.%I add column %I %s', spec[1], spec[2], spec[3], spec[4]);
        end if;
    end loop;
    -- Before acknowledgements became HOT updates (above): pending rows are now found
    -- through their runs (services/sync.py, _resume_pending).
    drop index if exists activation.ledger_pending;
    if not exists (
        select 1 from pg_class
        where oid = 'activation.ledger'::regclass and 'fillfactor=50' = any(reloptions)
    ) then
        alter table activation.ledger set (fillfactor = 50);
    end if;
    alter table activation.ledger drop constraint if exists ledger_run_id_fkey;
    -- The batch key alone: the few rejected rows of a batch are found among its 1,000, and
    -- the index holds each key once (B-tree deduplication), not once per person.
    drop index if exists activation.ledger_batch;
    if to_regclass('activation.ledger_batch_key') is null then
        create index ledger_batch_key on activation.ledger (batch_key);
    end if;
    -- Synced members whose inputs a sync must digest again (rejected, or excluded but kept):
    -- few, and every run of every audience asks for them.
    if to_regclass('activation.sync_state_unvouched') is null then
        create index sync_state_unvouched on activation.sync_state (destination, audience)
            where source_fingerprint is null;
    end if;
    if to_regclass('activation.ledger_run') is null then
        create index ledger_run on activation.ledger (run_id);
    end if;
    -- The per-row changelog analysts query: the ledger under its documented name.
    if to_regclass('activation.sync_changes') is null then
        create view activation.sync_changes as
        select
            run_id, destination, audience, person_token, operation, status, error_code,
            created_at, acked_at
        from activation.ledger;
    end if;
end;
$$;

-- Change epochs (connectors/warehouse/changes.py): writers of a sync's inputs stamp what
-- they write with the clock's epoch; a sync advances it and reads what changed since.
create table if not exists activation.change_clock (
    only_row boolean primary key default true check (only_row),
    epoch bigint not null
);
insert into activation.change_clock (epoch) values (1) on conflict do nothing;

-- Persons whose set of source subjects changed (identity resolution writes both the person a
-- subject left and the one it joined): their payload may come from other vault rows now.
create table if not exists landing.person_changes (
    change_epoch bigint not null,
    person_token text not null
);
create index if not exists person_changes_epoch on landing.person_changes (change_epoch);

-- Per destination x audience: the epoch from which the next run must look for changes, and
-- the columns and purpose it read (a segment declaring other fields or another purpose starts
-- again from every member; so does a watermark kept before purposes were).
create table if not exists activation.sync_watermarks (
    destination text not null,
    audience text not null,
    columns text[] not null,
    since_epoch bigint not null,
    updated_at timestamptz not null default now(),
    primary key (destination, audience)
);
alter table activation.sync_watermarks add column if not exists purpose text;

-- Per destination x audience: members a sync excluded (the gate refused them, or they had no
-- address or failed the DLP check), with their consent digest and the last day the gate's
-- decision holds. While both hold and their vault rows are untouched, later runs count them
-- again without reading them (services/sync.py); codes and hashes only.
create table if not exists activation.sync_exclusions (
    destination text not null,
    audience text not null,
    person_token text not null,
    reason text not null,
    consent_fingerprint text not null,
    consent_valid_until date not null,
    excluded_at timestamptz not null default now(),
    primary key (destination, audience, person_token)
);

-- Review before first send: a marketing audience needs a recorded approval per destination
-- ('*' = any) whose definition hash still matches the segment (purpose, fields, model SQL).
create table if not exists activation.approvals (
    approval_id bigserial primary key,
    audience text not null,
    destination text not null,
    definition_hash text not null,
    purpose text not null,
    personalization_fields text[] not null,
    approved_by text not null,
    note text not null,
    approved_at timestamptz not null default now(),
    voided_at timestamptz,
    void_reason text
);
create index if not exists approvals_audience on activation.approvals (audience, destination);

-- The recipient's email domain (lower-case, domain only: never the address), derived at
-- sync time from the decrypted address, for deliverability by domain.
create table if not exists activation.recipient_domains (
    person_token text primary key,
    domain text not null,
    updated_at timestamptz not null default now()
);

-- Journeys (journeys/*.yaml, services/journeys.py): definitions, positions, sends.
create schema if not exists journeys;

-- Each journey's steps as last loaded from its YAML, for dbt and the report.
create table if not exists journeys.steps (
    journey text not null,
    step text not null,
    step_order integer not null,
    kind text not null,  -- send | wait | update_attribute | add_to_segment | remove_from_segment | branch
    next_steps text[] not null default '{}',
    engine_audience text,  -- send steps: the engine audience the message goes out through
    message text,
    purpose text not null,
    definition_hash text not null,
    published_at timestamptz not null default now(),
    primary key (journey, step)
);

-- Where each person is in each journey: one row per journey x person (a journey is entered once).
create table if not exists journeys.positions (
    journey text not null,
    person_token text not null,
    step text not null,
    status text not null default 'active',  -- active | completed | exited
    exit_reason text,
    entered_at timestamptz not null,
    step_entered_at timestamptz not null,
    updated_at timestamptz not null default now(),
    primary key (journey, person_token)
);
create index if not exists positions_at_step on journeys.positions (journey, status, step);

-- Every step a person entered; the key makes revisiting a step impossible.
create table if not exists journeys.step_log (
    journey text not null,
    person_token text not null,
    step text not null,
    entered_at timestamptz not null,
    completed_at timestamptz,
    left_at timestamptz,  -- left the journey while at this step (exit condition, consent, ...)
    outcome text,
    primary key (journey, person_token, step)
);

-- Messages journey steps sent: written before the push, acknowledged after.
create table if not exists journeys.sends (
    journey text not null,
    step text not null,
    person_token text not null,
    destination text not null,
    engine_audience text not null,
    batch_key text not null,  -- the idempotency key sent to the engine
    purpose text not null,
    consent_ref text,
    status text not null default 'pending',  -- pending | acked | rejected
    error_code text,
    sent_at timestamptz not null,
    acked_at timestamptz,
    primary key (journey, step, person_token)
);

-- Contact attributes journeys set: values come from the journey YAML, never from records.
create table if not exists journeys.attributes (
    person_token text not null,
    name text not null,
    value text not null,
    set_by_journey text not null,
    updated_at timestamptz not null default now(),
    primary key (person_token, name)
);

-- Static segments journeys add people to or remove them from.
create table if not exists journeys.segment_members (
    segment text not null,
    person_token text not null,
    added_by_journey text not null,
    added_at timestamptz not null default now(),
    primary key (segment, person_token)
);

-- PHI protection (issue 4): additive only. See docs/privacy-operations.md.
-- Token key rotation: each old token and the token that replaced it, so history written
-- under old tokens (ledger, late engine feedback, disclosures) still joins to the person.
create table if not exists vault.token_rekey (
    old_token text primary key,
    new_token text not null,
    kind text not null,  -- chained (computed from the old token) | person (re-resolved)
    rotation_id bigint not null,
    created_at timestamptz not null default now()
);
create index if not exists token_rekey_new on vault.token_rekey (new_token);

-- Key rotations and their progress (a crashed rotation resumes from here).
create table if not exists vault.key_rotations (
    rotation_id bigserial primary key,
    kind text not null,  -- token | vault
    from_version integer not null,
    to_version integer not null,
    status text not null default 'running',  -- running | committed | finished
    rows_rekeyed bigint not null default 0,
    started_at timestamptz not null default now(),
    finished_at timestamptz
);

-- Removals owed to engines after `hub forget` (services/forget.py): the engine-side id as
-- it was pushed; drained by services.forget.drain_forget_queue (`hub forget drain`).
create table if not exists activation.forget_queue (
    queue_id bigserial primary key,
    destination text not null,
    audience text not null,
    person_token text not null,
    reason text not null default 'forget',
    status text not null default 'pending',  -- pending | removed | failed
    error_code text,
    requested_at timestamptz not null default now(),
    processed_at timestamptz
);
create index if not exists forget_queue_pending on activation.forget_queue (destination, status);

-- Engine feedback that arrives after a token rotation still carries the id the engine was
-- given; translate it to the current person token as it is inserted so suppressions keep
-- applying. Once per statement over its new rows (a transition table), not once per row:
-- feedback arrives by COPY in pages of thousands, a per-row PL/pgSQL call cost about 5 µs a
-- row (half of a bare COPY's time), and with no rotation on record one probe of an empty
-- table is the whole cost. A chain of rotations is followed hop by hop (at most 16).
create or replace function vault.current_person_tokens() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    hops integer := 0;
    moved integer;
begin
    if not exists (select 1 from vault.token_rekey) then
        return null;
    end if;
    -- Each pass moves the new rows whose token was rotated one hop along the chain (the
    -- rows are found through the tokens as inserted, so unmapped rows are never touched).
    loop
        execute format(
            'update %I.%I t set person_token = r.new_token from vault.token_rekey r'
            ' where r.old_token = t.person_token and t.event_id in (select n.event_id'
            '  from new_rows n join vault.token_rekey first_hop'
            '  on first_hop.old_token = n.person_token)',
            tg_table_schema, tg_table_name);
        get diagnostics moved = row_count;
        hops := hops + 1;
        exit when moved = 0 or hops >= 16;
    end loop;
    return null;
end;
$$;
-- Created only when missing (no table lock at every start); the row-level triggers of
-- earlier versions are replaced once.
do $$
begin
    if exists (select 1 from pg_trigger where tgname = 'events_current_token') then
        drop trigger events_current_token on engagement.events;
    end if;
    if exists (select 1 from pg_trigger where tgname = 'suppressions_current_token') then
        drop trigger suppressions_current_token on engagement.suppressions;
    end if;
    drop function if exists vault.current_person_token();
    if not exists (select 1 from pg_trigger where tgname = 'events_current_tokens') then
        create trigger events_current_tokens after insert on engagement.events
            referencing new table as new_rows
            for each statement execute function vault.current_person_tokens();
    end if;
    if not exists (select 1 from pg_trigger where tgname = 'suppressions_current_tokens') then
        create trigger suppressions_current_tokens after insert on engagement.suppressions
            referencing new table as new_rows
            for each statement execute function vault.current_person_tokens();
    end if;
end;
$$;

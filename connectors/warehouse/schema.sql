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

create table if not exists vault.contact_fields (
    subject_token text not null,
    column_name text not null,
    key_version integer not null,
    ciphertext bytea not null,
    effective_at timestamptz,
    updated_at timestamptz not null default now(),
    primary key (subject_token, column_name)
);

create table if not exists vault.identity_keys (
    subject_token text not null,
    key_type text not null,
    key_hash text not null,
    primary key (subject_token, key_type, key_hash)
);
create index if not exists identity_keys_hash on vault.identity_keys (key_type, key_hash);

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
    run_id text not null references activation.sync_runs (run_id),
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
);
create index if not exists ledger_pending on activation.ledger (destination, audience, status);

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
    received_at timestamptz not null default now()
);
create index if not exists suppressions_person on engagement.suppressions (person_token);

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

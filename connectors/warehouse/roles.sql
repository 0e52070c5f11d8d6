-- Database roles of the hub (issue 4): NOLOGIN group roles; people and services log in as
-- their own users made members of one of them (`create role alice login in role hub_analyst`).
--
--   hub_owner     every privilege on the hub's schemas (migrations, rotation, forget, retention)
--   hub_pipeline  ingest, identity resolution, dbt, feedback: read/write landing, quarantine,
--                 vault (ciphertext only: it never holds keys), engagement, journeys; reads
--                 activation; creates the dbt schemas' relations
--   hub_sender    the send step: reads audiences, consent events, suppressions and person_xref,
--                 writes activation; reads vault rows ONLY through
--                 vault.contact_fields_for_send(), which appends an audit record for each call
--   hub_analyst   the analyst tier only: marts.dim_persons, seg_*, audience_membership,
--                 audience_exclusions, segment_catalog, agg_* (dbt re-grants these after each
--                 build); nothing in vault, landing, quarantine, activation, engagement, audit
--
-- Decryption needs the vault key, which lives outside the database (domain/keys.py): a role
-- that can read ciphertext still cannot read PHI. audit.events takes INSERT (and the hash
-- column to chain on) from pipeline and sender; UPDATE and DELETE are refused to everyone by
-- the append-only trigger. Idempotent and quiet: grants already in place are not re-issued,
-- so a steady-state run writes nothing to the catalog. Applied by
-- connectors.warehouse.roles.ensure_roles() from Warehouse.ensure_schema().

do $roles$
declare
    role_name text;
    may_create boolean;
begin
    select rolsuper or rolcreaterole into may_create from pg_roles where rolname = current_user;
    foreach role_name in array array['hub_owner', 'hub_pipeline', 'hub_sender', 'hub_analyst'] loop
        if may_create and not exists (select 1 from pg_roles where rolname = role_name) then
            begin
                execute format('create role %I nologin', role_name);
            exception when duplicate_object or unique_violation then
                null;  -- another database of this cluster created it a moment ago
            end;
        end if;
    end loop;
end;
$roles$;

-- Helpers for this session only (pg_temp): grant when schema, object and role exist and the
-- privilege is not held yet; skip (with a notice) what the current user may not grant.
create or replace function pg_temp.hub_grant_schema(
    schema_name text, privileges text, role_name text
) returns void language plpgsql as $$
declare
    privilege text;
begin
    if not exists (select 1 from pg_namespace where nspname = schema_name)
        or not exists (select 1 from pg_roles where rolname = role_name) then
        return;
    end if;
    foreach privilege in array string_to_array(privileges, ',') loop
        if not has_schema_privilege(role_name, schema_name, privilege) then
            begin
                execute format('grant %s on schema %I to %I', privilege, schema_name, role_name);
            exception when insufficient_privilege then
                raise notice 'hub roles: may not grant % on schema %', privilege, schema_name;
            end;
        end if;
    end loop;
end;
$$;

create or replace function pg_temp.hub_grant_tables(
    schema_name text, privileges text, role_name text, name_pattern text default '.*'
) returns void language plpgsql as $$
declare
    relation record;
    privilege text;
begin
    if not exists (select 1 from pg_roles where rolname = role_name) then
        return;
    end if;
    for relation in
        select c.oid, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = schema_name and c.relkind in ('r', 'v', 'm', 'p', 'f')
            and c.relname ~ name_pattern
    loop
        foreach privilege in array string_to_array(privileges, ',') loop
            if not has_table_privilege(role_name, relation.oid, privilege) then
                begin
                    execute format(
                        'grant %s on %I.%I to %I', privilege, schema_name, relation.relname,
                        role_name
                    );
                exception when insufficient_privilege then
                    raise notice 'hub roles: may not grant % on %.%', privilege, schema_name,
                        relation.relname;
                end;
            end if;
        end loop;
    end loop;
end;
$$;

create or replace function pg_temp.hub_grant_sequences(schema_name text, role_name text)
returns void language plpgsql as $$
declare
    sequence_name text;
begin
    if not exists (select 1 from pg_roles where rolname = role_name) then
        return;
    end if;
    for sequence_name in
        select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = schema_name and c.relkind = 'S'
    loop
        if not has_sequence_privilege(
            role_name, format('%I.%I', schema_name, sequence_name), 'USAGE'
        ) then
            begin
                execute format(
                    'grant usage on sequence %I.%I to %I', schema_name, sequence_name, role_name
                );
            exception when insufficient_privilege then
                null;
            end;
        end if;
    end loop;
end;
$$;

-- The only way hub_sender reads vault rows: one call, one audit record (hash-chained exactly
-- as connectors/warehouse/audit.py does, under the same advisory lock).
create or replace function vault.contact_fields_for_send(
    p_person_tokens text[], p_columns text[], p_purpose text, p_reason text
) returns table (
    person_token text,
    subject_token text,
    column_name text,
    key_version integer,
    ciphertext bytea,
    effective_at timestamptz
) language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_at timestamptz := date_trunc('second', clock_timestamp());
    v_previous text;
    v_object text;
    v_count bigint;
begin
    if coalesce(p_purpose, '') = '' or coalesce(p_reason, '') = '' then
        raise exception 'a vault read needs a purpose and a reason';
    end if;
    select count(distinct x.person_token) into v_count
    from landing.person_xref x
    join vault.contact_fields v on v.subject_token = x.subject_token
    where x.person_token = any(p_person_tokens) and v.column_name = any(p_columns);
    v_object := format(
        'vault.contact_fields[%s] for %s',
        array_to_string(array(select distinct c from unnest(p_columns) c order by c), ','),
        p_reason
    );
    perform pg_advisory_xact_lock(7262002);
    select e.hash into v_previous from audit.events e order by e.audit_id desc limit 1;
    v_previous := coalesce(v_previous, repeat('0', 64));
    insert into audit.events (at, actor, role, purpose, action, object, row_count, prev_hash, hash)
    values (
        v_at, session_user, 'hub_sender', p_purpose, 'vault_read', v_object, v_count, v_previous,
        encode(sha256(convert_to(concat_ws(
            chr(31), v_previous,
            to_char(v_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00',
            session_user::text, 'hub_sender', p_purpose, 'vault_read', v_object, v_count::text
        ), 'UTF8')), 'hex')
    );
    return query
        select x.person_token, v.subject_token, v.column_name, v.key_version, v.ciphertext,
            v.effective_at
        from landing.person_xref x
        join vault.contact_fields v on v.subject_token = x.subject_token
        where x.person_token = any(p_person_tokens) and v.column_name = any(p_columns);
end;
$$;
revoke all on function vault.contact_fields_for_send(text[], text[], text, text) from public;

do $grants$
declare
    schema_name text;
    role_name text;
begin
    -- hub_owner: everything in every hub schema (append-only audit still refuses changes).
    foreach schema_name in array array[
        'landing', 'quarantine', 'vault', 'activation', 'engagement', 'audit', 'journeys',
        'staging', 'intermediate', 'marts', 'reference'
    ] loop
        perform pg_temp.hub_grant_schema(schema_name, 'USAGE,CREATE', 'hub_owner');
        perform pg_temp.hub_grant_tables(
            schema_name,
            case when schema_name = 'audit' then 'SELECT,INSERT,REFERENCES'
                else 'SELECT,INSERT,UPDATE,DELETE,REFERENCES,TRIGGER' end,
            'hub_owner'
        );
        perform pg_temp.hub_grant_sequences(schema_name, 'hub_owner');
    end loop;

    -- hub_pipeline: writes the operational tier, builds the dbt schemas.
    foreach schema_name in array array[
        'landing', 'quarantine', 'vault', 'engagement', 'journeys'
    ] loop
        perform pg_temp.hub_grant_schema(schema_name, 'USAGE', 'hub_pipeline');
        perform pg_temp.hub_grant_tables(schema_name, 'SELECT,INSERT,UPDATE,DELETE', 'hub_pipeline');
        perform pg_temp.hub_grant_sequences(schema_name, 'hub_pipeline');
    end loop;
    foreach schema_name in array array['staging', 'intermediate', 'marts', 'reference'] loop
        perform pg_temp.hub_grant_schema(schema_name, 'USAGE,CREATE', 'hub_pipeline');
        perform pg_temp.hub_grant_tables(schema_name, 'SELECT', 'hub_pipeline');
    end loop;
    perform pg_temp.hub_grant_schema('activation', 'USAGE', 'hub_pipeline');
    perform pg_temp.hub_grant_tables('activation', 'SELECT', 'hub_pipeline');

    -- hub_sender: audiences and consent in, activation out, vault only via the function.
    foreach schema_name in array array[
        'landing', 'marts', 'intermediate', 'engagement', 'activation', 'vault'
    ] loop
        perform pg_temp.hub_grant_schema(schema_name, 'USAGE', 'hub_sender');
    end loop;
    perform pg_temp.hub_grant_tables(
        'landing', 'SELECT', 'hub_sender', '^(person_xref|person_changes)$'
    );
    perform pg_temp.hub_grant_tables(
        'marts', 'SELECT', 'hub_sender', '^(audience_membership|segment_catalog)$'
    );
    perform pg_temp.hub_grant_tables(
        'intermediate', 'SELECT', 'hub_sender', '^int_consent_(events|digests)$'
    );
    perform pg_temp.hub_grant_tables('engagement', 'SELECT', 'hub_sender', '^suppressions$');
    perform pg_temp.hub_grant_tables('activation', 'SELECT,INSERT,UPDATE,DELETE', 'hub_sender');
    perform pg_temp.hub_grant_sequences('activation', 'hub_sender');
    if exists (select 1 from pg_roles where rolname = 'hub_sender')
        and not has_function_privilege(
            'hub_sender', 'vault.contact_fields_for_send(text[], text[], text, text)', 'EXECUTE'
        ) then
        grant execute on function vault.contact_fields_for_send(text[], text[], text, text)
            to hub_sender;
    end if;

    -- audit.events: append and chain only (the hash column to chain on, nothing else).
    foreach role_name in array array['hub_pipeline', 'hub_sender'] loop
        if exists (select 1 from pg_roles where rolname = role_name) then
            perform pg_temp.hub_grant_schema('audit', 'USAGE', role_name);
            perform pg_temp.hub_grant_tables('audit', 'INSERT', role_name, '^events$');
            perform pg_temp.hub_grant_sequences('audit', role_name);
            if not has_column_privilege(role_name, 'audit.events', 'hash', 'SELECT') then
                execute format('grant select (audit_id, hash) on audit.events to %I', role_name);
            end if;
        end if;
    end loop;

    -- hub_analyst: the analyst tier of marts, nothing else (dbt's post-hook re-grants the
    -- tables it rebuilds; this covers a warehouse whose marts predate the role).
    perform pg_temp.hub_grant_schema('marts', 'USAGE', 'hub_analyst');
    perform pg_temp.hub_grant_tables(
        'marts', 'SELECT', 'hub_analyst',
        '^(dim_persons|seg_.*|audience_membership|audience_exclusions|segment_catalog|agg_.*)$'
    );
end;
$grants$;

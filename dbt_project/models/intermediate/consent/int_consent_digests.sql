{#-
    One digest per person of their consent events, with the change epoch of the build that
    last changed it, so the send step re-reads only people whose consent changed since an
    audience's last sync (services/sync.py), instead of comparing every member's digest on
    every run.

    A count and a sum of 64-bit row hashes: order-independent, so PostgreSQL aggregates by
    hashing, with no sort per person. It only detects change; its inputs are tokens, codes
    and dates, never PHI.

    Incremental: every build digests all events again (cheap: one hash aggregate) and writes
    only the people whose digest differs from the kept one, stamped with the change clock's
    epoch under its shared lock (macros/change_clock.sql). A person whose events are all
    gone keeps a row with the empty digest '0:', stamped, so that change is seen too.
    Rows kept from before this column existed have no epoch: unchanged since the build that
    added it, which every audience's next sync follows by comparing all its members (its
    watermark is set again then).

    Each row written also carries the person's events as the send step's consent gate reads
    them (a JSON array of [event_type, effective_on, purpose, expires_on, source_ref] in a
    fixed order), so a sync reads one row per member instead of aggregating their events
    again for every audience (at 1M patients 2-3 s of the largest audience's first sync).
    Rows kept from before the column existed get theirs at a later build (the first build
    adds the column, the next fills it, stamped, so each audience's next sync compares
    those members' consent digests once); until then the send step aggregates their events.

    Built after audience_exclusions (the depends_on below), though it reads only the
    events: dbt hands models to its threads in the order they become ready, and models that
    become ready together shallowest first, then by name. Beside the events it took a thread
    just before the history, the longest chain of the build (events -> history -> state ->
    audiences), which then waited for it; after the consent state it still came before
    audience_membership, the end of that chain. Now it runs beside the audiences' tests. The
    send step, its only reader, follows the audiences anyway.
-#}
{{
    config(
        materialized='incremental',
        unique_key='person_token',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook=["{{ one_build_at_a_time() }}", "{{ hold_change_clock() }}"],
    )
}}
-- depends_on: {{ ref('audience_exclusions') }}
{%- set kept_columns = adapter.get_columns_in_relation(this) | map(attribute='name') | list
    if is_incremental() else [] %}
with

fresh as (
    select
        person_token,
        {{ consent_events_digest() }} as events_digest
    from {{ ref('int_consent_events') }}
    group by person_token
),

written as (
{% if is_incremental() %}
    select
        coalesce(fresh.person_token, kept.person_token) as person_token,
        coalesce(fresh.events_digest, '0:') as events_digest
    from fresh
    full join {{ this }} as kept on kept.person_token = fresh.person_token
    where
        kept.events_digest is distinct from coalesce(fresh.events_digest, '0:')
        {%- if 'events' in kept_columns %}
        or kept.events is null
        {%- endif %}
{% else %}
    select person_token, events_digest from fresh
{% endif %}
),

-- In the order the send step gives a person's events to its gate (services/sync.py), which
-- breaks ties between events of one day by it.
events as (
    select
        person_token,
        json_agg(
            json_build_array(event_type, effective_on, purpose, expires_on, source_ref)
            order by effective_on, event_type, purpose, expires_on, source_ref
        )::text as events
    from {{ ref('int_consent_events') }}
    {% if is_incremental() -%}
    where person_token in (select person_token from written)
    {% endif -%}
    group by person_token
)

select
    written.person_token,
    written.events_digest,
    coalesce(events.events, '[]') as events,
    {{ change_epoch() }}::bigint as change_epoch
from written
left join events on events.person_token = written.person_token

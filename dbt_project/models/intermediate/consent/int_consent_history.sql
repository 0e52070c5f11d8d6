{#-
    Why a person was in or out of each purpose on any date: consent state as intervals
    [valid_from, valid_to] (valid_to null = still in force), one row per person x purpose x
    stretch of unchanged state. State can only change on an event's day or the day after a
    permit expires, so the rules of domain/consent.py are evaluated on exactly those days
    (consent_decisions_wide, one row per person and day) and equal neighbours are merged.
    int_consent_state is this table's slice on the evaluation date.

    Incremental by person: a person's history depends on their own events and on the rules
    alone (not on the evaluation date), so a build recomputes only the people whose events
    changed. Each row keeps the digest of its person's events (the one int_consent_digests
    keeps, consent_events_digest) followed by a fingerprint of this model's code and of the
    rules macro it calls, so editing either rewrites every history at the next build, as
    --full-refresh would. People left without events (a merge moved them, a source was
    forgotten) lose their rows in the pre-hook. At 1M patients the history was the slowest
    model of every build (33 s), though a delivery changes a few percent of the people.
-#}
{%- set rules = consent_decisions_wide('change_days', 'consent_events') %}
{%- set code_version = local_md5(model.raw_code ~ rules)[:12] %}
{%- set kept_columns = adapter.get_columns_in_relation(this) | map(attribute='name') | list
    if is_incremental() else [] %}
{{
    config(
        materialized='incremental',
        unique_key='person_token',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook=["{{ one_build_at_a_time() }}", "{{ drop_histories_without_events() }}"],
    )
}}
with

all_events as not materialized (
    select * from {{ ref('int_consent_events') }}
),

-- One hash aggregate over every event (about 1 s at 1M patients).
digests as (
    select
        person_token,
        {{ consent_events_digest() }} || '/{{ code_version }}' as events_digest
    from all_events
    group by person_token
),

{% if is_incremental() %}
-- The people whose history is missing or was written from other events or other code.
-- Each person's rows carry the same digest, and each person has exactly one open interval
-- per purpose: comparing that one row per person hashes a sixth of the table (6.7 -> 4.8 s
-- at 1M patients).
recomputed as (
    select digests.person_token, digests.events_digest
    from digests
    {%- if 'events_digest' in kept_columns %}
    where not exists (
        select 1
        from {{ this }} as kept
        where
            kept.valid_to is null
            and kept.purpose = '{{ consent_purposes() | first }}'
            and kept.person_token = digests.person_token
            and kept.events_digest = digests.events_digest
    )
    {%- endif %}
),

-- Read five times (the days, then each kind of event): a few percent of the events, kept.
consent_events as materialized (
    select all_events.*
    from all_events
    inner join recomputed on all_events.person_token = recomputed.person_token
),
{% else %}
recomputed as (
    select * from digests
),

-- Read five times (the days, then each kind of event), and not materialized: scanning the
-- table again is cheaper than PostgreSQL's temporary copy of it (42.4 -> 40.4 s at 1M).
consent_events as not materialized (
    select * from all_events
),
{% endif %}

change_days as (
    select
        person_token,
        effective_on as as_of
    from consent_events

    -- union all: consent_decisions_wide takes the distinct days itself
    union all

    select
        person_token,
        (expires_on + 1) as as_of
    from consent_events
    where expires_on is not null
),

decisions as (
    {{ rules }}
),

with_previous as (
    select
        *
        {%- for purpose in consent_purposes() %},
        lag(reason_{{ purpose }}) over by_day as previous_reason_{{ purpose }},
        lag(consent_ref_{{ purpose }}) over by_day as previous_consent_ref_{{ purpose }}
        {%- endfor %}
    from decisions
    window by_day as (partition by person_token order by as_of)
),

-- Whether each day starts a new interval, per purpose. Only days that start one for some
-- purpose go on: the others can neither start nor end an interval (about a quarter of the
-- days at 1M), and the previous day's values are not needed past this point.
flagged as (
    select *
    from (
        select
            person_token,
            as_of
            {%- for purpose in consent_purposes() %},
            reason_{{ purpose }},
            consent_ref_{{ purpose }},
            (
                previous_reason_{{ purpose }} is null
                or previous_reason_{{ purpose }} is distinct from reason_{{ purpose }}
                or previous_consent_ref_{{ purpose }} is distinct from consent_ref_{{ purpose }}
            ) as starts_{{ purpose }}
            {%- endfor %}
        from with_previous
    ) as days
    where
        {%- for purpose in consent_purposes() %}
        {{ 'or ' if not loop.first }}starts_{{ purpose }}
        {%- endfor %}
),

-- An interval ends the day before the purpose's next start: found in the same per-person
-- day order, not by sorting the intervals again for lead(). The frame's start moves, so
-- each person costs the square of their change days: a few (2.8 on average at 1M).
with_next as (
    select
        *
        {%- for purpose in consent_purposes() %},
        min(as_of) filter (where starts_{{ purpose }}) over following_days
            as next_start_{{ purpose }}
        {%- endfor %}
    from flagged
    window following_days as (
        partition by person_token
        order by as_of
        rows between 1 following and unbounded following
    )
),

with_digest as (
    select
        with_next.*,
        recomputed.events_digest
    from with_next
    inner join recomputed on with_next.person_token = recomputed.person_token
),

final as (
    {%- for purpose in consent_purposes() %}
    select
        person_token,
        '{{ purpose }}'::text as purpose,
        'email'::text as channel,
        as_of as valid_from,
        next_start_{{ purpose }} - 1 as valid_to,
        reason_{{ purpose }} = 'ok' as allowed,
        reason_{{ purpose }} as reason,
        consent_ref_{{ purpose }} as consent_ref,
        events_digest
    from with_digest
    where starts_{{ purpose }}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
)

select * from final

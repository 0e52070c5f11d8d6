{#-
    Why a person was in or out of each purpose on any date: consent state as intervals
    [valid_from, valid_to] (valid_to null = still in force), one row per person x purpose x
    stretch of unchanged state. State can only change on an event's day or the day after a
    permit expires, so the rules of domain/consent.py are evaluated on exactly those days
    (consent_decisions_wide, one row per person and day) and equal neighbours are merged.
    int_consent_state is this table's slice on the evaluation date.
-#}
with

-- Read five times (the days, then each kind of event), and not materialized: scanning the
-- table again is cheaper than PostgreSQL's temporary copy of it (42.4 -> 40.4 s at 1M).
consent_events as not materialized (
    select * from {{ ref('int_consent_events') }}
),

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
    {{ consent_decisions_wide('change_days', 'consent_events') }}
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
        consent_ref_{{ purpose }} as consent_ref
    from with_next
    where starts_{{ purpose }}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
)

select * from final

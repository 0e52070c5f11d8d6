{#-
    Why a person was in or out of each purpose on any date: consent state as intervals
    [valid_from, valid_to] (valid_to null = still in force), one row per person x purpose x
    stretch of unchanged state. State can only change on an event's day or the day after a
    permit expires, so the rules are evaluated on exactly those days (same macro as
    int_consent_state) and equal neighbours are merged.
-#}
with

consent_events as (
    select * from {{ ref('int_consent_events') }}
),

change_days as (
    select
        person_token,
        effective_on as as_of
    from consent_events

    union

    select
        person_token,
        (expires_on + 1) as as_of
    from consent_events
    where expires_on is not null
),

decisions as (
    {{ consent_decisions('change_days', 'consent_events') }}
),

with_previous as (
    select
        person_token,
        purpose,
        as_of,
        allowed,
        reason,
        consent_ref,
        lag(reason) over (
            partition by person_token, purpose order by as_of
        ) as previous_reason,
        lag(consent_ref) over (
            partition by person_token, purpose order by as_of
        ) as previous_consent_ref
    from decisions
),

changes as (
    select
        person_token,
        purpose,
        as_of as valid_from,
        allowed,
        reason,
        consent_ref
    from with_previous
    where
        previous_reason is null
        or previous_reason is distinct from reason
        or previous_consent_ref is distinct from consent_ref
),

final as (
    select
        person_token,
        purpose,
        'email'::text as channel,
        valid_from,
        (
            lead(valid_from) over (partition by person_token, purpose order by valid_from) - 1
        ) as valid_to,
        allowed,
        reason,
        consent_ref
    from changes
)

select * from final

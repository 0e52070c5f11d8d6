{#-
    Consent state on the evaluation date: one row per person x purpose x channel ('email').
    The rules are domain/consent.py's (see the consent_decisions macro); the consent_gate
    macro reads this model and nothing else.
-#}
with

persons as (
    select person_token from {{ ref('int_persons') }}
),

consent_events as (
    select * from {{ ref('int_consent_events') }}
),

person_days as (
    select
        person_token,
        {{ evaluation_date() }} as as_of
    from persons

    -- union all: consent_decisions takes the distinct days itself
    union all

    select
        person_token,
        {{ evaluation_date() }} as as_of
    from consent_events
),

decisions as (
    {{ consent_decisions('person_days', 'consent_events') }}
),

final as (
    select
        person_token::text as person_token,
        purpose::text as purpose,
        'email'::text as channel,
        as_of::date as evaluated_on,
        allowed::boolean as allowed,
        reason::text as reason,
        consent_ref::text as consent_ref
    from decisions
)

select * from final

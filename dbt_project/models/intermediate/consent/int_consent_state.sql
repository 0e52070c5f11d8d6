{#-
    Consent state on the evaluation date: one row per person x purpose x channel ('email').
    The consent_gate macro reads this model and nothing else.

    A slice of int_consent_history, not a second evaluation of the rules: the state of a
    person with consent events is the interval holding the evaluation date. A person with
    no interval that day (no events, or only later ones) gets the rules' defaults, decided
    by the same consent_decisions macro for a day without events. Persons are every
    resolved person (person_xref) and every person with consent events.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

{%- set first_purpose = consent_purposes() | first %}

-- Not materialized (nor is the history imported as a CTE): PostgreSQL would spill millions
-- of rows to disk to read them twice, where scanning the table twice is cheaper.
on_the_day as not materialized (
    select
        person_token,
        purpose,
        allowed,
        reason,
        consent_ref
    from {{ ref('int_consent_history') }}
    where
        valid_from <= {{ evaluation_date() }}
        and (valid_to is null or valid_to >= {{ evaluation_date() }})
),

-- Each person with events has exactly one open interval per purpose.
persons_with_events as (
    select person_token
    from {{ ref('int_consent_history') }}
    where valid_to is null and purpose = '{{ first_purpose }}'
),

persons_without_state as (
    (
        select person_token from xref
        union
        select person_token from persons_with_events
    )
    except
    select person_token from on_the_day
    where purpose = '{{ first_purpose }}'
),

defaults as (
    {{ consent_decisions(
        "(select null::text as person_token, " ~ evaluation_date() ~ " as as_of) as no_person",
        "(select null::text as person_token, null::text as purpose, null::text as event_type,"
        ~ " null::date as effective_on, null::date as expires_on, null::text as source,"
        ~ " null::text as source_ref where false) as no_events"
    ) | indent(4) }}
),

states as (
    select * from on_the_day

    union all

    select
        persons_without_state.person_token,
        defaults.purpose,
        defaults.allowed,
        defaults.reason,
        defaults.consent_ref
    from persons_without_state
    cross join defaults
),

final as (
    select
        person_token::text as person_token,
        purpose::text as purpose,
        'email'::text as channel,
        {{ evaluation_date() }}::date as evaluated_on,
        allowed::boolean as allowed,
        reason::text as reason,
        consent_ref::text as consent_ref
    from states
)

select * from final

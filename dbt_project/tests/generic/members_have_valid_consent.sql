{#-
    Fails for every audience member whose consent state for the audience's purpose on the
    evaluation date is not 'allowed' (or who has no consent state at all), and for rows
    evaluated on another day than the evaluation date.
-#}
{% test members_have_valid_consent(model, consent_model=none) %}

with

members as (
    select * from {{ model }}
),

consent_state as (
    select * from {{ consent_model if consent_model is not none else ref('int_consent_state') }}
    where channel = 'email'
)

select
    members.audience,
    members.person_token,
    members.purpose,
    members.evaluated_on,
    consent_state.reason
from members
left join consent_state
    on
        members.person_token = consent_state.person_token
        and members.purpose = consent_state.purpose
        and members.evaluated_on = consent_state.evaluated_on
where
    not coalesce(consent_state.allowed, false)
    or members.evaluated_on is distinct from {{ evaluation_date() }}

{% endtest %}

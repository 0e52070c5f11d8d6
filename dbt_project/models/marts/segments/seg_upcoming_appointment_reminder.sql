{#-
    Living patients with a booked appointment starting in the next 3 days (tomorrow up to
    3 days ahead; today's is too late for an email reminder).
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

appointments as (
    select * from {{ ref('int_appointments') }}
),

upcoming as (
    select distinct person_token
    from appointments
    where
        status = 'booked'
        and starts_on between {{ evaluation_date() }} + 1 and {{ evaluation_date() }} + 3
),

final as (
    select persons.person_token::text as person_token
    from persons
    inner join upcoming
        on persons.person_token = upcoming.person_token
    where not persons.is_deceased
)

select * from final

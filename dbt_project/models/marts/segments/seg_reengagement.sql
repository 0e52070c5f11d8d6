{#-
    Living patients who were seen before but have had no visit in the last 18 months and
    have nothing booked.
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

utilization as (
    select * from {{ ref('int_utilization') }}
),

final as (
    select persons.person_token::text as person_token
    from persons
    inner join utilization
        on persons.person_token = utilization.person_token
    where
        not persons.is_deceased
        and utilization.last_visit_on is not null
        and utilization.last_visit_on
        < cast({{ evaluation_date() }} - interval '18 months' as date)
        and utilization.next_appointment_on is null
)

select * from final

{#-
    Living patients who missed an appointment (no-show) in the last 7 days and have not
    booked another one since.
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
        and utilization.last_no_show_on >= {{ evaluation_date() }} - 7
        and utilization.next_appointment_on is null
)

select * from final

{#-
    Utilization per person on the evaluation date: visits (encounters that happened), the
    next booked appointment, recent no-shows and cancellations, and whether the person is
    overdue for a visit (none in 12 months and nothing booked). One row per person with any
    encounter or appointment.
-#}
with

encounters as (
    select
        person_token,
        started_on
    from {{ ref('int_encounters') }}
    where started_on <= {{ evaluation_date() }}
),

appointments as (
    select * from {{ ref('int_appointments') }}
),

visit_facts as (
    select
        person_token,
        min(started_on) as first_visit_on,
        max(started_on) as last_visit_on,
        count(*) as visits,
        count(*) filter (
            where started_on > cast({{ evaluation_date() }} - interval '12 months' as date)
        ) as visits_12m
    from encounters
    group by person_token
),

appointment_facts as (
    select
        person_token,
        min(starts_on) filter (
            where status = 'booked' and starts_on >= {{ evaluation_date() }}
        ) as next_appointment_on,
        (
            array_agg(service_code order by starts_at)
                filter (where status = 'booked' and starts_on >= {{ evaluation_date() }})
        )[1] as next_appointment_service,
        min(starts_on) filter (
            where
                status = 'booked'
                and service_code = 'mammography'
                and starts_on >= {{ evaluation_date() }}
        ) as next_mammography_appointment_on,
        max(starts_on) filter (
            where status = 'noshow' and starts_on <= {{ evaluation_date() }}
        ) as last_no_show_on,
        count(*) filter (
            where
                status = 'noshow'
                and starts_on <= {{ evaluation_date() }}
                and starts_on > {{ evaluation_date() }} - 90
        ) as no_shows_90d,
        count(*) filter (
            where
                status = 'noshow'
                and starts_on <= {{ evaluation_date() }}
                and starts_on > cast({{ evaluation_date() }} - interval '12 months' as date)
        ) as no_shows_12m,
        count(*) filter (
            where
                status in ('cancelled', 'canceled')
                and starts_on > {{ evaluation_date() }} - 90
        ) as cancellations_90d
    from appointments
    group by person_token
),

persons as (
    select person_token from visit_facts
    union
    select person_token from appointment_facts
),

final as (
    select
        persons.person_token,
        visit_facts.first_visit_on,
        visit_facts.last_visit_on,
        coalesce(visit_facts.visits, 0) as visits,
        coalesce(visit_facts.visits_12m, 0) as visits_12m,
        {{ evaluation_date() }} - visit_facts.last_visit_on as days_since_last_visit,
        appointment_facts.next_appointment_on,
        appointment_facts.next_appointment_service,
        appointment_facts.next_mammography_appointment_on,
        appointment_facts.last_no_show_on,
        coalesce(appointment_facts.no_shows_90d, 0) as no_shows_90d,
        coalesce(appointment_facts.no_shows_12m, 0) as no_shows_12m,
        coalesce(appointment_facts.cancellations_90d, 0) as cancellations_90d,
        (
            (
                visit_facts.last_visit_on is null
                or visit_facts.last_visit_on
                < cast({{ evaluation_date() }} - interval '12 months' as date)
            )
            and appointment_facts.next_appointment_on is null
        ) as is_overdue_for_visit,
        {{ evaluation_date() }} as evaluated_on
    from persons
    left join visit_facts
        on persons.person_token = visit_facts.person_token
    left join appointment_facts
        on persons.person_token = appointment_facts.person_token
)

select * from final

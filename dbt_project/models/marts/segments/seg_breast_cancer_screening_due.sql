{#-
    Living female patients aged 50-74 with no mammogram in the last 2 years and no
    mammography appointment booked (USPSTF biennial screening, ages 50-74).
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

care_history as (
    select * from {{ ref('int_person_care_history') }}
),

utilization as (
    select * from {{ ref('int_utilization') }}
),

final as (
    select persons.person_token::text as person_token
    from persons
    left join care_history
        on persons.person_token = care_history.person_token
    left join utilization
        on persons.person_token = utilization.person_token
    where
        persons.is_patient
        and not persons.is_deceased
        and {{ mammogram_due('persons.sex', 'persons.age_years', 'care_history.last_mammogram_on') }}
        and utilization.next_mammography_appointment_on is null
)

select * from final

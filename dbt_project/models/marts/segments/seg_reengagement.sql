{#-
    Living patients who were seen before but have had no encounter in the last 18 months and
    have nothing booked.
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

care_history as (
    select * from {{ ref('int_person_care_history') }}
),

final as (
    select persons.person_token
    from persons
    inner join care_history
        on persons.person_token = care_history.person_token
    where
        not persons.is_deceased
        and care_history.last_encounter_on is not null
        and care_history.last_encounter_on
        < cast({{ evaluation_date() }} - interval '18 months' as date)
        and care_history.next_booked_appointment_on is null
)

select * from final

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

final as (
    select persons.person_token
    from persons
    left join care_history
        on persons.person_token = care_history.person_token
    where
        persons.is_patient
        and not persons.is_deceased
        and persons.sex = 'female'
        and persons.age_years between 50 and 74
        and (
            care_history.last_mammogram_on is null
            or care_history.last_mammogram_on
            < cast({{ evaluation_date() }} - interval '2 years' as date)
        )
        and care_history.next_booked_mammography_on is null
)

select * from final

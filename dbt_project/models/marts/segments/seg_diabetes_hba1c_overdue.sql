{#- Living patients with active diabetes and no HbA1c result in the last 6 months. -#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

care_history as (
    select * from {{ ref('int_person_care_history') }}
),

final as (
    select persons.person_token::text as person_token
    from persons
    inner join care_history
        on persons.person_token = care_history.person_token
    where
        not persons.is_deceased
        and care_history.has_active_diabetes
        and {{ hba1c_overdue('care_history.last_hba1c_on') }}
)

select * from final

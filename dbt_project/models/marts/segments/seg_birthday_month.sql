{#-
    Living adults (18 and over; no greetings addressed to children) whose birthday falls in
    the month of the evaluation date. Patients and CRM contacts alike.
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

final as (
    select person_token::text as person_token
    from persons
    where
        not is_deceased
        and birth_month = extract(month from {{ evaluation_date() }})::integer
        and age_years >= 18
)

select * from final

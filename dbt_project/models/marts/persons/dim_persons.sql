{#-
    Analyst tier (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)): no dates finer than a year, no
    birth month, birth year withheld from people aged 90 or more (their year would reveal the
    age), ZIP3 only where the three-digit area holds more than 20,000 people, else '000'.
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

journey as (
    select * from {{ ref('int_journey_stage') }}
),

populous_zip3 as (
    select zip3 from {{ ref('safe_harbor_zip3') }}
),

final as (
    select
        persons.person_token::text as person_token,
        case
            -- Conservative: any year that could belong to someone 90+ on the day is withheld.
            when extract(year from {{ evaluation_date() }})::integer - persons.birth_year >= 90
                then null
            else persons.birth_year
        end::integer as birth_year,
        {{ age_band('persons.age_years') }}::text as age_band,
        persons.sex::text as sex,
        case
            when persons.zip3 is null then null
            when populous_zip3.zip3 is not null then persons.zip3
            else '000'
        end::text as zip3,
        persons.state::text as state,
        persons.language::text as language,
        persons.coverage_type::text as coverage_type,
        journey.journey_stage::text as journey_stage
    from persons
    left join populous_zip3
        on persons.zip3 = populous_zip3.zip3
    left join journey
        on persons.person_token = journey.person_token
)

select * from final

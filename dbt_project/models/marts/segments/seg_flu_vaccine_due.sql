{#-
    Patients (6 months and older, living) with no influenza immunization since August 1 of
    the current flu season (the season that started on the last August 1 on or before the
    evaluation date).
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

care_history as (
    select * from {{ ref('int_person_care_history') }}
),

season as (
    select
        make_date(
            extract(year from {{ evaluation_date() }})::integer
            - case when extract(month from {{ evaluation_date() }}) < 8 then 1 else 0 end,
            8,
            1
        ) as season_start_on
),

final as (
    select persons.person_token
    from persons
    cross join season
    left join care_history
        on persons.person_token = care_history.person_token
    where
        persons.is_patient
        and not persons.is_deceased
        -- 6 months or older (age unknown: assumed eligible)
        and coalesce(
            (extract(year from {{ evaluation_date() }})::integer - persons.birth_year) * 12
            + extract(month from {{ evaluation_date() }})::integer
            - coalesce(persons.birth_month, 1),
            999
        ) >= 6
        and (
            care_history.last_influenza_vaccine_on is null
            or care_history.last_influenza_vaccine_on < season.season_start_on
        )
)

select * from final

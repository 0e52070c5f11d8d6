{#-
    Patients (6 months and older, living) with no influenza immunization in the current flu
    season. Season-aware: the season starts on August 1 (var flu_season_start_month) and
    outreach runs through March (var flu_season_outreach_end_month); from April to July the
    segment is empty - there is no season to vaccinate for.
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

care_history as (
    select * from {{ ref('int_person_care_history') }}
),

season as (
    select {{ flu_season_start() }} as season_start_on
),

final as (
    select persons.person_token::text as person_token
    from persons
    cross join season
    left join care_history
        on persons.person_token = care_history.person_token
    where
        season.season_start_on is not null
        and persons.is_patient
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

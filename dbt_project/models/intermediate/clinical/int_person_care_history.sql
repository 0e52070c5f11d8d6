{#-
    One row per person with clinical activity: the facts the care-gap segments ask about,
    as of the evaluation date (records dated after it are ignored, so back-filled runs see
    what was known then).
-#}
with

conditions as (
    select * from {{ ref('int_conditions') }}
),

observations as (
    select * from {{ ref('int_observations') }}
),

immunizations as (
    select * from {{ ref('int_immunizations') }}
),

procedures as (
    select * from {{ ref('int_procedures') }}
),

encounters as (
    select * from {{ ref('int_encounters') }}
),

appointments as (
    select * from {{ ref('int_appointments') }}
),

condition_facts as (
    select
        person_token,
        bool_or('diabetes' = any(code_sets) and is_active) as has_active_diabetes,
        bool_or('hypertension' = any(code_sets) and is_active) as has_active_hypertension
    from conditions
    where coalesce(onset_on, recorded_on, {{ evaluation_date() }}) <= {{ evaluation_date() }}
    group by person_token
),

observation_facts as (
    select
        person_token,
        max(observed_on) filter (where 'hba1c' = any(code_sets)) as last_hba1c_on
    from observations
    where observed_on <= {{ evaluation_date() }}
    group by person_token
),

immunization_facts as (
    select
        person_token,
        max(occurred_on) filter (
            where 'influenza_vaccine' = any(code_sets)
        ) as last_influenza_vaccine_on
    from immunizations
    where occurred_on <= {{ evaluation_date() }}
    group by person_token
),

procedure_facts as (
    select
        person_token,
        max(performed_on) filter (where 'mammography' = any(code_sets)) as last_mammogram_on
    from procedures
    where performed_on <= {{ evaluation_date() }}
    group by person_token
),

encounter_facts as (
    select
        person_token,
        min(started_on) as first_encounter_on,
        max(started_on) as last_encounter_on,
        count(*) as encounter_count
    from encounters
    where started_on <= {{ evaluation_date() }}
    group by person_token
),

appointment_facts as (
    select
        person_token,
        min(starts_on) filter (where status = 'booked') as next_booked_appointment_on,
        min(starts_on) filter (
            where status = 'booked' and service_code = 'mammography'
        ) as next_booked_mammography_on
    from appointments
    where starts_on >= {{ evaluation_date() }}
    group by person_token
),

persons as (
    select person_token from condition_facts
    union
    select person_token from observation_facts
    union
    select person_token from immunization_facts
    union
    select person_token from procedure_facts
    union
    select person_token from encounter_facts
    union
    select person_token from appointment_facts
),

final as (
    select
        persons.person_token,
        coalesce(condition_facts.has_active_diabetes, false) as has_active_diabetes,
        coalesce(condition_facts.has_active_hypertension, false) as has_active_hypertension,
        observation_facts.last_hba1c_on,
        immunization_facts.last_influenza_vaccine_on,
        procedure_facts.last_mammogram_on,
        encounter_facts.first_encounter_on,
        encounter_facts.last_encounter_on,
        coalesce(encounter_facts.encounter_count, 0) as encounter_count,
        appointment_facts.next_booked_appointment_on,
        appointment_facts.next_booked_mammography_on,
        {{ evaluation_date() }} as evaluated_on
    from persons
    left join condition_facts
        on persons.person_token = condition_facts.person_token
    left join observation_facts
        on persons.person_token = observation_facts.person_token
    left join immunization_facts
        on persons.person_token = immunization_facts.person_token
    left join procedure_facts
        on persons.person_token = procedure_facts.person_token
    left join encounter_facts
        on persons.person_token = encounter_facts.person_token
    left join appointment_facts
        on persons.person_token = appointment_facts.person_token
)

select * from final

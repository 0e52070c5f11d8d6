{#-
    One row per person with a clinical fact the care-gap segments ask about, as of the
    evaluation date (records dated after it are ignored, so back-filled runs see what was
    known then). Visits and appointments live in int_utilization.
-#}
with

conditions as (
    select * from {{ ref('int_conditions_active') }}
),

-- Only the results and doses of the code sets the segments ask about, from the record views:
-- the per-code summaries (int_labs_latest, int_immunizations_latest) cover every code, and
-- computing them was about 25 s of work in a 1M build for the few codes needed here.
hba1c_results as (
    select
        person_token,
        observation_token,
        value_number,
        observed_at,
        observed_on
    from {{ ref('int_observations') }}
    where
        (code_system, code) in ({{ code_set_codes('hba1c') }})
        and observed_on <= {{ evaluation_date() }}
),

influenza_vaccines as (
    select
        person_token,
        occurred_on
    from {{ ref('int_immunizations') }}
    where
        (code_system, code) in ({{ code_set_codes('influenza_vaccine') }})
        and occurred_on <= {{ evaluation_date() }}
),

procedures as (
    select * from {{ ref('int_procedures') }}
    where performed_on <= {{ evaluation_date() }}
),

condition_facts as (
    select
        person_token,
        bool_or('diabetes' = any(code_sets)) as has_active_diabetes,
        bool_or('hypertension' = any(code_sets)) as has_active_hypertension,
        count(*) as active_condition_count
    from conditions
    group by person_token
),

-- The latest HbA1c result (the same order as int_labs_latest).
lab_facts as (
    select distinct on (person_token)
        person_token,
        observed_on as last_hba1c_on,
        value_number as last_hba1c_value
    from hba1c_results
    order by person_token, observed_at desc, observation_token desc nulls last
),

immunization_facts as (
    select
        person_token,
        max(occurred_on) as last_influenza_vaccine_on
    from influenza_vaccines
    group by person_token
),

procedure_facts as (
    select
        person_token,
        max(performed_on) filter (where 'mammography' = any(code_sets)) as last_mammogram_on,
        max(performed_on) filter (
            where 'post_procedure_followup' = any(code_sets)
        ) as last_followup_procedure_on,
        max(performed_on) as last_procedure_on
    from procedures
    group by person_token
),

persons as (
    select person_token from condition_facts
    union
    select person_token from lab_facts
    union
    select person_token from immunization_facts
    union
    select person_token from procedure_facts
),

final as (
    select
        persons.person_token,
        coalesce(condition_facts.has_active_diabetes, false) as has_active_diabetes,
        coalesce(condition_facts.has_active_hypertension, false) as has_active_hypertension,
        coalesce(condition_facts.active_condition_count, 0) as active_condition_count,
        lab_facts.last_hba1c_on,
        lab_facts.last_hba1c_value,
        immunization_facts.last_influenza_vaccine_on,
        procedure_facts.last_mammogram_on,
        procedure_facts.last_followup_procedure_on,
        procedure_facts.last_procedure_on,
        {{ evaluation_date() }} as evaluated_on
    from persons
    left join condition_facts
        on persons.person_token = condition_facts.person_token
    left join lab_facts
        on persons.person_token = lab_facts.person_token
    left join immunization_facts
        on persons.person_token = immunization_facts.person_token
    left join procedure_facts
        on persons.person_token = procedure_facts.person_token
)

select * from final

{#-
    Active conditions per person and code (SNOMED CT or ICD-10, as coded at the source) on
    the evaluation date: the latest version of the record is active (or has no status) and
    its onset, else its recording, is on or before the day.
-#}
with

conditions as (
    select * from {{ ref('int_conditions') }}
),

active as (
    select *
    from conditions
    where
        is_active
        and coalesce(onset_on, recorded_on, {{ evaluation_date() }}) <= {{ evaluation_date() }}
),

final as (
    select
        person_token,
        code_system,
        code,
        min(display) as display,
        -- the same for every row of a code (from the clinical_code_sets seed)
        min(code_sets) as code_sets,
        min(coalesce(onset_on, recorded_on)) as first_onset_on,
        count(*) as records,
        {{ evaluation_date() }} as evaluated_on
    from active
    group by person_token, code_system, code
)

select * from final

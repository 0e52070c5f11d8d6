{#-
    Conditions (problem list) from FHIR; a condition without a clinical status counts as active.
    One row per source record (landing keeps its newest version), attached to the resolved
    person. Records that did not happen (entered in error, not done, cancelled) are dropped.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

fhir_conditions as (
    select * from {{ ref('stg_fhir__conditions') }}
),

code_sets as (
    {{ code_sets_by_code() }}
),

conditions as (
    select
        {{ source_record_columns('condition_token') }},
        code_system,
        code,
        display,
        clinical_status,
        onset_on,
        recorded_on
    from fhir_conditions
),

final as (
    select
        xref.person_token,
        conditions.source_system,
        conditions.condition_token,
        conditions.code_system,
        conditions.code,
        conditions.display,
        conditions.clinical_status,
        conditions.onset_on,
        conditions.recorded_on,
        coalesce(code_sets.code_sets, array[]::text[]) as code_sets,
        coalesce(conditions.clinical_status, 'active') in ('active', 'recurrence', 'relapse') as is_active
    from conditions
    inner join xref
        on conditions.subject_token = xref.subject_token
    left join code_sets
        on
            conditions.code_system = code_sets.code_system
            and conditions.code = code_sets.code
    where
        coalesce(conditions.clinical_status, '') <> 'entered-in-error'
)

select * from final

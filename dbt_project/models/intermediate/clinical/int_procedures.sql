{#-
    Procedures from FHIR.
    One row per source record (landing keeps its newest version), attached to the resolved
    person. Records that did not happen (entered in error, not done, cancelled) are dropped.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

fhir_procedures as (
    select * from {{ ref('stg_fhir__procedures') }}
),

code_sets as (
    {{ code_sets_by_code() }}
),

procedures as (
    select
        {{ source_record_columns('procedure_token') }},
        status,
        code_system,
        code,
        display,
        performed_on as recorded_performed_on
    from fhir_procedures
),

final as (
    select
        xref.person_token,
        procedures.source_system,
        procedures.procedure_token,
        procedures.status,
        procedures.code_system,
        procedures.code,
        procedures.display,
        coalesce(code_sets.code_sets, array[]::text[]) as code_sets,
        coalesce(procedures.recorded_performed_on, {{ to_utc_date('procedures.record_updated_at') }}) as performed_on
    from procedures
    inner join xref
        on procedures.subject_token = xref.subject_token
    left join code_sets
        on
            procedures.code_system = code_sets.code_system
            and procedures.code = code_sets.code
    where
        coalesce(procedures.status, '') not in {{ not_done_statuses() }}
)

select * from final

{#-
    Procedures from FHIR.
    Newest version of each source record (FHIR resource id; HL7 rows without an id stand
    alone), attached to the resolved person. Records that did not happen (entered in error,
    not done, cancelled) are dropped.
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

unioned as (
    select
        {{ source_record_columns('procedure_token') }},
        status,
        code_system,
        code,
        display,
        performed_on as recorded_performed_on
    from fhir_procedures
),

latest_versions as (
    select
        *,
        row_number() over (
            partition by source_system, coalesce(procedure_token, landing_row_id::text)
            order by record_updated_at desc nulls last, loaded_at desc, landing_row_id desc
        ) as version_rank
    from unioned
),

final as (
    select
        xref.person_token,
        latest_versions.source_system,
        latest_versions.procedure_token,
        latest_versions.status,
        latest_versions.code_system,
        latest_versions.code,
        latest_versions.display,
        coalesce(code_sets.code_sets, array[]::text[]) as code_sets,
        coalesce(latest_versions.recorded_performed_on, {{ to_utc_date('latest_versions.record_updated_at') }}) as performed_on
    from latest_versions
    inner join xref
        on latest_versions.subject_token = xref.subject_token
    left join code_sets
        on
            latest_versions.code_system = code_sets.code_system
            and latest_versions.code = code_sets.code
    where
        latest_versions.version_rank = 1
        and coalesce(latest_versions.status, '') not in {{ not_done_statuses() }}
)

select * from final

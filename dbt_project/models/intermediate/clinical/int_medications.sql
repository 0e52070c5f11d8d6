{#-
    Medication requests (prescriptions) from FHIR, RxNorm-coded.
    Newest version of each source record, attached to the resolved person; records entered in
    error are dropped (stopped/cancelled ones are kept: int_medications_active decides).
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

fhir_medication_requests as (
    select * from {{ ref('stg_fhir__medication_requests') }}
),

latest_versions as (
    select
        *,
        row_number() over (
            partition by source_system, coalesce(medication_request_token, landing_row_id::text)
            order by record_updated_at desc nulls last, loaded_at desc, landing_row_id desc
        ) as version_rank
    from fhir_medication_requests
),

final as (
    select
        xref.person_token,
        latest_versions.source_system,
        latest_versions.medication_request_token,
        latest_versions.status,
        latest_versions.code_system,
        latest_versions.code,
        latest_versions.display,
        coalesce(
            latest_versions.authored_on, {{ to_utc_date('latest_versions.record_updated_at') }}
        ) as authored_on
    from latest_versions
    inner join xref
        on latest_versions.subject_token = xref.subject_token
    where
        latest_versions.version_rank = 1
        and coalesce(latest_versions.status, '') <> 'entered-in-error'
)

select * from final

{#-
    Medication requests (prescriptions) from FHIR, RxNorm-coded.
    One row per source record (landing keeps its newest version), attached to the resolved
    person; records entered in error are dropped (stopped/cancelled ones are kept:
    int_medications_active decides).
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

fhir_medication_requests as (
    select * from {{ ref('stg_fhir__medication_requests') }}
),

final as (
    select
        xref.person_token,
        fhir_medication_requests.source_system,
        fhir_medication_requests.medication_request_token,
        fhir_medication_requests.status,
        fhir_medication_requests.code_system,
        fhir_medication_requests.code,
        fhir_medication_requests.display,
        coalesce(
            fhir_medication_requests.authored_on, {{ to_utc_date('fhir_medication_requests.record_updated_at') }}
        ) as authored_on
    from fhir_medication_requests
    inner join xref
        on fhir_medication_requests.subject_token = xref.subject_token
    where
        coalesce(fhir_medication_requests.status, '') <> 'entered-in-error'
)

select * from final

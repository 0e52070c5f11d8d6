{#-
    Appointments from FHIR and HL7 SIU (booked, fulfilled, noshow, cancelled).
    Newest version of each source record (FHIR resource id; HL7 rows without an id stand
    alone), attached to the resolved person. Records that did not happen (entered in error,
    not done, cancelled) are dropped.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

fhir_appointments as (
    select * from {{ ref('stg_fhir__appointments') }}
),

hl7_appointments as (
    select * from {{ ref('stg_hl7__appointments') }}
),

unioned as (
    select
        {{ source_record_columns('appointment_token') }},
        status,
        service_code,
        starts_at,
        ends_at
    from fhir_appointments

    union all

    select
        {{ source_record_columns('appointment_token') }},
        status,
        service_code,
        starts_at,
        ends_at
    from hl7_appointments
),

latest_versions as (
    select
        *,
        row_number() over (
            partition by source_system, coalesce(appointment_token, landing_row_id::text)
            order by record_updated_at desc nulls last, loaded_at desc, landing_row_id desc
        ) as version_rank
    from unioned
),

final as (
    select
        xref.person_token,
        latest_versions.source_system,
        latest_versions.appointment_token,
        latest_versions.status,
        latest_versions.service_code,
        latest_versions.starts_at,
        latest_versions.ends_at,
        {{ to_utc_date('latest_versions.starts_at') }} as starts_on
    from latest_versions
    inner join xref
        on latest_versions.subject_token = xref.subject_token
    where
        latest_versions.version_rank = 1
        and coalesce(latest_versions.status, '') <> 'entered-in-error'
)

select * from final

{#-
    Appointments from FHIR and HL7 SIU (booked, fulfilled, noshow, cancelled).
    One row per source record (landing keeps its newest version; HL7 rows without an id
    stand alone), attached to the resolved person. Records that did not happen (entered in
    error, not done, cancelled) are dropped.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

unioned as (
    {{ source_record_union(
        ['stg_fhir__appointments', 'stg_hl7__appointments'],
        'appointment_token',
        ['status', 'service_code', 'starts_at', 'ends_at']
    ) }}
),

final as (
    select
        xref.person_token,
        unioned.source_system,
        unioned.appointment_token,
        unioned.status,
        unioned.service_code,
        unioned.starts_at,
        unioned.ends_at,
        {{ to_utc_date('unioned.starts_at') }} as starts_on
    from unioned
    inner join xref
        on unioned.subject_token = xref.subject_token
    where
        coalesce(unioned.status, '') <> 'entered-in-error'
)

select * from final

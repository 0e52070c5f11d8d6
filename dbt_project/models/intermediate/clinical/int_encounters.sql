{#-
    Encounters (visits) from FHIR and HL7 ADT; planned and cancelled ones are dropped.
    Newest version of each source record (FHIR resource id; HL7 rows without an id stand
    alone), attached to the resolved person. Records that did not happen (entered in error,
    not done, cancelled) are dropped.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

fhir_encounters as (
    select * from {{ ref('stg_fhir__encounters') }}
),

hl7_encounters as (
    select * from {{ ref('stg_hl7__encounters') }}
),

unioned as (
    select
        source_system,
        landing_row_id,
        loaded_at,
        record_updated_at,
        subject_token,
        encounter_token,
        status,
        class_code,
        type_code,
        type_system,
        ended_at,
        started_at as recorded_started_at
    from fhir_encounters

    union all

    select
        source_system,
        landing_row_id,
        loaded_at,
        record_updated_at,
        subject_token,
        encounter_token,
        status,
        class_code,
        type_code,
        type_system,
        ended_at,
        started_at as recorded_started_at
    from hl7_encounters
),

latest_versions as (
    select
        *,
        row_number() over (
            partition by source_system, coalesce(encounter_token, landing_row_id::text)
            order by record_updated_at desc nulls last, loaded_at desc, landing_row_id desc
        ) as version_rank
    from unioned
),

final as (
    select
        xref.person_token,
        latest_versions.source_system,
        latest_versions.encounter_token,
        latest_versions.status,
        latest_versions.class_code,
        latest_versions.type_code,
        latest_versions.type_system,
        latest_versions.ended_at,
        coalesce(latest_versions.recorded_started_at, latest_versions.record_updated_at) as started_at,
        {{ to_utc_date('coalesce(latest_versions.recorded_started_at, latest_versions.record_updated_at)') }} as started_on
    from latest_versions
    inner join xref
        on latest_versions.subject_token = xref.subject_token
    where
        latest_versions.version_rank = 1
        and coalesce(latest_versions.status, '') not in ('planned', 'cancelled', 'entered-in-error')
)

select * from final

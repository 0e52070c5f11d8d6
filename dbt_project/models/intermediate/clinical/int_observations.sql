{#-
    Observations (labs, vitals) from FHIR and HL7 (ORU^R01 OBX).
    Newest version of each source record (FHIR resource id; HL7 rows without an id stand
    alone), attached to the resolved person. Records that did not happen (entered in error,
    not done, cancelled) are dropped.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

fhir_observations as (
    select * from {{ ref('stg_fhir__observations') }}
),

hl7_observations as (
    select * from {{ ref('stg_hl7__observations') }}
),

code_sets as (
    {{ code_sets_by_code() }}
),

unioned as (
    select
        source_system,
        landing_row_id,
        loaded_at,
        record_updated_at,
        subject_token,
        observation_token,
        status,
        code_system,
        code,
        display,
        value_number,
        unit,
        observed_at as recorded_observed_at
    from fhir_observations

    union all

    select
        source_system,
        landing_row_id,
        loaded_at,
        record_updated_at,
        subject_token,
        observation_token,
        status,
        code_system,
        code,
        display,
        value_number,
        unit,
        observed_at as recorded_observed_at
    from hl7_observations
),

latest_versions as (
    select
        *,
        row_number() over (
            partition by source_system, coalesce(observation_token, landing_row_id::text)
            order by record_updated_at desc nulls last, loaded_at desc, landing_row_id desc
        ) as version_rank
    from unioned
),

final as (
    select
        xref.person_token,
        latest_versions.source_system,
        latest_versions.observation_token,
        latest_versions.status,
        latest_versions.code_system,
        latest_versions.code,
        latest_versions.display,
        latest_versions.value_number,
        latest_versions.unit,
        coalesce(code_sets.code_sets, array[]::text[]) as code_sets,
        coalesce(latest_versions.recorded_observed_at, latest_versions.record_updated_at) as observed_at,
        {{ to_utc_date('coalesce(latest_versions.recorded_observed_at, latest_versions.record_updated_at)') }} as observed_on
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

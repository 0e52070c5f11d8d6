{#-
    Observations (labs, vitals) from FHIR and HL7 (ORU^R01 OBX): the incremental
    int_observations_deduplicated (newest version per source record) attached to the
    resolved person from the current identity resolution, with its code sets. Records that
    did not happen (entered in error, not done, cancelled) are dropped. A view, so a
    re-linked subject moves to its new person at once.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

observations as (
    select * from {{ ref('int_observations_deduplicated') }}
),

code_sets as (
    {{ code_sets_by_code() }}
),

final as (
    select
        xref.person_token,
        observations.source_system,
        observations.observation_token,
        observations.status,
        observations.code_system,
        observations.code,
        observations.display,
        observations.value_number,
        observations.unit,
        coalesce(code_sets.code_sets, array[]::text[]) as code_sets,
        observations.observed_at,
        observations.observed_on
    from observations
    inner join xref
        on observations.subject_token = xref.subject_token
    left join code_sets
        on
            observations.code_system = code_sets.code_system
            and observations.code = code_sets.code
    where coalesce(observations.status, '') not in {{ not_done_statuses() }}
)

select * from final

{#-
    Observations (labs, vitals) from FHIR and HL7 (ORU^R01 OBX), one row per source record
    (landing keeps its newest version), attached to the resolved person from the current
    identity resolution, with its code sets. Records that did not happen (entered in error,
    not done, cancelled) are dropped.

    A view, not an incremental table: its one reader in a build (int_person_care_history)
    scans it once, so a copy only added its writing and indexing (about 13 s of a 1M build),
    and journeys see a new result as soon as it lands. Per-person reads use landing's
    subject_token index.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

code_sets as (
    {{ code_sets_by_code() }}
),

unioned as (
    {{ source_record_union(
        ['stg_fhir__observations', 'stg_hl7__observations'],
        'observation_token',
        ['status', 'code_system', 'code', 'display', 'value_number', 'unit', 'observed_at']
    ) }}
),

final as (
    select
        xref.person_token,
        unioned.source_system,
        unioned.observation_token,
        unioned.status,
        unioned.code_system,
        unioned.code,
        unioned.display,
        unioned.value_number::double precision as value_number,
        unioned.unit,
        coalesce(code_sets.code_sets, array[]::text[]) as code_sets,
        coalesce(unioned.observed_at, unioned.record_updated_at)::timestamptz as observed_at,
        {{ to_utc_date('coalesce(unioned.observed_at, unioned.record_updated_at)') }}
            as observed_on
    from unioned
    inner join xref
        on unioned.subject_token = xref.subject_token
    left join code_sets
        on
            unioned.code_system = code_sets.code_system
            and unioned.code = code_sets.code
    where coalesce(unioned.status, '') not in {{ not_done_statuses() }}
)

select * from final

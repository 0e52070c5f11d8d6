{#-
    Immunizations from FHIR and HL7 (VXU^V04 RXA), one row per source record (landing keeps
    its newest version), attached to the resolved person from the current identity
    resolution, with its code sets. Records that did not happen (entered in error, not done,
    cancelled) are dropped.

    A view, not an incremental table, for the reasons int_observations gives: its one reader
    in a build (int_person_care_history) scans it once.
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
        ['stg_fhir__immunizations', 'stg_hl7__immunizations'],
        'immunization_token',
        ['status', 'code_system', 'code', 'display', 'occurred_on']
    ) }}
),

final as (
    select
        xref.person_token,
        unioned.source_system,
        unioned.immunization_token,
        unioned.status,
        unioned.code_system,
        unioned.code,
        unioned.display,
        coalesce(code_sets.code_sets, array[]::text[]) as code_sets,
        coalesce(unioned.occurred_on, {{ to_utc_date('unioned.record_updated_at') }})
            as occurred_on
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

{#-
    Immunizations from FHIR and HL7 (VXU^V04 RXA): the incremental
    int_immunizations_deduplicated (newest version per source record) attached to the
    resolved person from the current identity resolution, with its code sets. Records that
    did not happen (entered in error, not done, cancelled) are dropped. A view, so a
    re-linked subject moves to its new person at once.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

immunizations as (
    select * from {{ ref('int_immunizations_deduplicated') }}
),

code_sets as (
    {{ code_sets_by_code() }}
),

final as (
    select
        xref.person_token,
        immunizations.source_system,
        immunizations.immunization_token,
        immunizations.status,
        immunizations.code_system,
        immunizations.code,
        immunizations.display,
        coalesce(code_sets.code_sets, array[]::text[]) as code_sets,
        immunizations.occurred_on
    from immunizations
    inner join xref
        on immunizations.subject_token = xref.subject_token
    left join code_sets
        on
            immunizations.code_system = code_sets.code_system
            and immunizations.code = code_sets.code
    where coalesce(immunizations.status, '') not in {{ not_done_statuses() }}
)

select * from final

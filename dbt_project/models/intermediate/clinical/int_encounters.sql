{#-
    Encounters (visits) per resolved person: the incremental int_encounters_deduplicated
    (newest version per source record) with the person attached from the current identity
    resolution; planned, cancelled and entered-in-error encounters are dropped. A view, so a
    re-linked subject moves to its new person at once. Other steps (journeys) read it.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

encounters as (
    select * from {{ ref('int_encounters_deduplicated') }}
),

final as (
    select
        xref.person_token,
        encounters.source_system,
        encounters.encounter_token,
        encounters.status,
        encounters.class_code,
        encounters.type_code,
        encounters.type_system,
        encounters.ended_at,
        encounters.started_at,
        encounters.started_on
    from encounters
    inner join xref
        on encounters.subject_token = xref.subject_token
    where encounters.counts_as_visit
)

select * from final

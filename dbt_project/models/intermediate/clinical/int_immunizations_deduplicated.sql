{{
    config(
        materialized='incremental',
        unique_key=['source_system', 'immunization_key'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['subject_token']},
            {'columns': ['source_system', 'immunization_key'], 'unique': True},
        ],
    )
}}
{#- The unique index: one row per source record, enforced on every write (and the
    incremental delete finds the records it replaces through it). -#}
{#-
    Immunizations from FHIR and HL7 VXU (RXA), newest version of each source record (FHIR
    resource id; an HL7 row without an id stands alone), keyed by source record.

    Incremental, as int_encounters_deduplicated and for the same reasons: a run reads only
    landing rows loaded since the newest loaded_at already here, minus the look-back
    (incremental_since), and replaces those records (delete+insert on source_system +
    immunization_key); landing re-stamps loaded_at when it replaces a record, so updates and
    late-arriving rows are seen. Within the window only records with a row not processed yet
    are rebuilt (mark_unprocessed). Kept at subject level (person attached when read, in
    int_immunizations) and with every status.
-#}
with

{{ source_records(
    ['stg_fhir__immunizations', 'stg_hl7__immunizations'],
    'immunization_token',
    'immunization_key',
    ['status', 'code_system', 'code', 'display', 'occurred_on']
) }},

final as (
    select
        source_system::text as source_system,
        immunization_key::text as immunization_key,
        subject_token::text as subject_token,
        immunization_token::text as immunization_token,
        status::text as status,
        code_system::text as code_system,
        code::text as code,
        display::text as display,
        coalesce(occurred_on, {{ to_utc_date('record_updated_at') }})::date as occurred_on,
        record_updated_at::timestamptz as record_updated_at,
        loaded_at::timestamptz as loaded_at
    from marked
    where is_unprocessed
)

select * from final

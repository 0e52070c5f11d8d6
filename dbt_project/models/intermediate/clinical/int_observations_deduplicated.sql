{{
    config(
        materialized='incremental',
        unique_key=['source_system', 'observation_key'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['subject_token']},
            {'columns': ['source_system', 'observation_key'], 'unique': True},
        ],
    )
}}
{#- The unique index: one row per source record, enforced on every write (and the
    incremental delete finds the records it replaces through it). -#}
{#-
    Observations (labs, vitals) from FHIR and HL7 ORU (OBX), newest version of each source
    record (FHIR resource id; an HL7 row without an id stands alone), keyed by source record.

    Incremental, as int_encounters_deduplicated and for the same reasons: observations are
    the largest append-heavy clinical table, so a run reads only landing rows loaded since
    the newest loaded_at already here, minus the look-back (incremental_since), and replaces
    those records (delete+insert on source_system + observation_key). Landing replaces a
    record in place when a newer version arrives and stamps loaded_at again, so updates and
    late-arriving rows are seen too. Within the window only records with a row not
    processed yet are rebuilt (mark_unprocessed). Kept at subject level (person attached when read, in
    int_observations) and with every status (a record can turn into entered-in-error).
-#}
with

{{ source_records(
    ['stg_fhir__observations', 'stg_hl7__observations'],
    'observation_token',
    'observation_key',
    ['status', 'code_system', 'code', 'display', 'value_number', 'unit', 'observed_at']
) }},

final as (
    select
        source_system::text as source_system,
        observation_key::text as observation_key,
        subject_token::text as subject_token,
        observation_token::text as observation_token,
        status::text as status,
        code_system::text as code_system,
        code::text as code,
        display::text as display,
        value_number::double precision as value_number,
        unit::text as unit,
        coalesce(observed_at, record_updated_at)::timestamptz as observed_at,
        {{ to_utc_date('coalesce(observed_at, record_updated_at)') }} as observed_on,
        record_updated_at::timestamptz as record_updated_at,
        loaded_at::timestamptz as loaded_at
    from marked
    where is_unprocessed
)

select * from final

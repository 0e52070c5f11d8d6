{{
    config(
        materialized='incremental',
        unique_key=['source_system', 'encounter_key'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook="{{ one_build_at_a_time() }}",
        indexes=[
            {'columns': ['subject_token']},
            {'columns': ['source_system', 'encounter_key'], 'unique': True},
        ],
    )
}}
{#- The unique index: one row per source record, enforced on every write (and the
    incremental delete finds the records it replaces through it). -#}
{#-
    Encounters (visits) from FHIR and HL7 ADT, newest version of each source record (FHIR
    resource id; an HL7 visit without an id stands alone), keyed by source record.

    Incremental: encounters are append-heavy, so a run reads only landing rows loaded since
    the newest loaded_at already here, minus the look-back (incremental_since), and replaces
    those records (delete+insert on source_system + encounter_key). Landing replaces a record
    in place when a newer version arrives and stamps loaded_at again, so updates are seen too.
    Within the window only records with a row not processed yet are rebuilt (mark_unprocessed).

    Kept at subject level on purpose: identity resolution may re-link subjects on any run, so
    person_token is attached when read, never frozen into an incremental
    table (int_encounters attaches it). Every status is kept (a record can turn into
    entered-in-error); counts_as_visit says whether it was a visit.
-#}
with

{{ source_records(
    ['stg_fhir__encounters', 'stg_hl7__encounters'],
    'encounter_token',
    'encounter_key',
    ['status', 'class_code', 'type_code', 'type_system', 'started_at', 'ended_at']
) }},

final as (
    select
        source_system::text as source_system,
        encounter_key::text as encounter_key,
        subject_token::text as subject_token,
        encounter_token::text as encounter_token,
        status::text as status,
        class_code::text as class_code,
        type_code::text as type_code,
        type_system::text as type_system,
        coalesce(started_at, record_updated_at)::timestamptz as started_at,
        ended_at::timestamptz as ended_at,
        {{ to_utc_date('coalesce(started_at, record_updated_at)') }} as started_on,
        (
            coalesce(status, '') not in ('planned', 'cancelled', 'entered-in-error')
        )::boolean as counts_as_visit,
        record_updated_at::timestamptz as record_updated_at,
        loaded_at::timestamptz as loaded_at
    from marked
    where is_unprocessed
)

select * from final

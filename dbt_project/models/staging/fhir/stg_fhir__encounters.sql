with

source as (
    select * from {{ source('fhir', 'encounters') }}
    where source = 'fhir'
),

renamed as (
    select
        row_id as landing_row_id,
        file_id,
        source as source_system,
        position as source_position,
        subject_token,
        source_id_token as encounter_token,
        lower(trim(status)) as status,
        class_code,
        type_code,
        {{ normalize_code_system('type_system') }} as type_system,
        start_at as started_at,
        end_at as ended_at,
        effective_at as record_updated_at,
        loaded_at
    from source
)

select * from renamed

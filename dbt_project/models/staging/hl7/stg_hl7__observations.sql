with

source as (
    select * from {{ source('hl7', 'observations') }}
    where source = 'hl7'
),

renamed as (
    select
        row_id as landing_row_id,
        file_id,
        source as source_system,
        position as source_position,
        subject_token,
        source_id_token as observation_token,
        lower(trim(status)) as status,
        {{ normalize_code_system('code_system') }} as code_system,
        trim(code) as code,
        display,
        value_number,
        unit,
        effective_at_clinical as observed_at,
        effective_at as record_updated_at,
        loaded_at
    from source
)

select * from renamed

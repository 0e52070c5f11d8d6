with

source as (
    select * from {{ source('fhir', 'conditions') }}
    where source = 'fhir'
),

renamed as (
    select
        row_id as landing_row_id,
        file_id,
        source as source_system,
        position as source_position,
        subject_token,
        source_id_token as condition_token,
        {{ normalize_code_system('code_system') }} as code_system,
        trim(code) as code,
        display,
        lower(trim(clinical_status)) as clinical_status,
        onset_date as onset_on,
        recorded_date as recorded_on,
        effective_at as record_updated_at,
        loaded_at
    from source
)

select * from renamed

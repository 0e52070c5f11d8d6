with

source as (
    select * from {{ source('fhir', 'appointments') }}
    where source = 'fhir'
),

renamed as (
    select
        row_id as landing_row_id,
        file_id,
        source as source_system,
        position as source_position,
        subject_token,
        source_id_token as appointment_token,
        lower(trim(status)) as status,
        lower(trim(service_code)) as service_code,
        start_at as starts_at,
        end_at as ends_at,
        effective_at as record_updated_at,
        loaded_at
    from source
)

select * from renamed

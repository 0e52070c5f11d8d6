with

source as (
    select * from {{ source('hl7', 'merges') }}
    where source = 'hl7'
),

renamed as (
    select
        row_id as landing_row_id,
        file_id,
        source as source_system,
        position as source_position,
        subject_token,
        prior_subject_token,
        effective_at as record_updated_at,
        loaded_at
    from source
)

select * from renamed

with

source as (
    select * from {{ source('fhir', 'consents') }}
    where source = 'fhir'
),

renamed as (
    select
        row_id as landing_row_id,
        file_id,
        source as source_system,
        position as source_position,
        subject_token,
        source_id_token as consent_token,
        lower(trim(status)) as status,
        lower(trim(purpose)) as purpose,
        lower(trim(decision)) as decision,
        period_start as period_start_on,
        period_end as period_end_on,
        recorded_at,
        effective_at as record_updated_at,
        loaded_at
    from source
)

select * from renamed

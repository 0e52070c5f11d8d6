with

source as (
    select * from {{ source('engine', 'suppressions') }}
),

renamed as (
    select
        event_id,
        destination,
        person_token,
        lower(trim(event_type)) as event_type,
        effective_at as suppressed_at,
        received_at
    from source
)

select * from renamed

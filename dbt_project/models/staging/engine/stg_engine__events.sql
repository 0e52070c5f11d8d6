{{ config(tags=['feedback']) }}

with

source as (
    select * from {{ source('engine', 'events') }}
),

renamed as (
    select
        event_id,
        destination,
        audience,
        person_token,
        lower(trim(event_type)) as event_type,
        occurred_at,
        machine_open as is_machine_open,
        lower(trim(bounce_type)) as bounce_type,
        lower(trim(recipient_domain)) as recipient_domain,
        received_at
    from source
)

select * from renamed

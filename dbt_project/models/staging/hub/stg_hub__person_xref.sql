with

source as (
    select * from {{ source('hub', 'person_xref') }}
),

renamed as (
    select
        subject_token,
        person_token,
        resolved_at
    from source
)

select * from renamed

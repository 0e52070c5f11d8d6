with

source as (
    select * from {{ source('crm', 'contacts') }}
    where source = 'crm'
),

renamed as (
    select
        row_id as landing_row_id,
        file_id,
        source as source_system,
        position as source_position,
        subject_token,
        has_email,
        has_phone,
        birth_year,
        birth_month,
        zip3,
        email_opt_in as is_email_opted_in,
        marketing_auth_signed as marketing_auth_signed_on,
        marketing_auth_expires as marketing_auth_expires_on,
        marketing_auth_revoked as marketing_auth_revoked_on,
        unsubscribed_at,
        effective_at as record_updated_at,
        loaded_at
    from source
)

select * from renamed

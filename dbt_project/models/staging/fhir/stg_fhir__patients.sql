with

source as (
    select * from {{ source('fhir', 'patients') }}
    where source = 'fhir'
),

renamed as (
    select
        row_id as landing_row_id,
        file_id,
        source as source_system,
        position as source_position,
        subject_token,
        source_id_token as patient_token,
        birth_year,
        birth_month,
        {{ normalize_sex('sex') }} as sex,
        has_email,
        has_phone,
        upper(trim(state)) as state,
        zip3,
        upper(trim(country)) as country,
        lower(trim(language)) as language,
        race,
        ethnicity,
        deceased as is_deceased,
        effective_at as record_updated_at,
        loaded_at
    from source
)

select * from renamed

{#-
    Active medications per person and code (RxNorm where the source codes it so): a
    prescription whose latest version is active or on hold, authored on or before the
    evaluation date.
-#}
with

medications as (
    select * from {{ ref('int_medications') }}
),

final as (
    select
        person_token,
        code_system,
        code,
        min(display) as display,
        max(authored_on) as last_authored_on,
        count(*) as prescriptions,
        {{ evaluation_date() }} as evaluated_on
    from medications
    where
        coalesce(status, 'active') in ('active', 'on-hold')
        and authored_on <= {{ evaluation_date() }}
    group by person_token, code_system, code
)

select * from final

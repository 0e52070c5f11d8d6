{#-
    Immunizations per person and vaccine (CVX) on or before the evaluation date: doses given
    and the latest one.
-#}
with

immunizations as (
    select * from {{ ref('int_immunizations') }}
    where
        code_system = 'cvx'
        and code is not null
        and occurred_on <= {{ evaluation_date() }}
),

final as (
    select
        person_token,
        code as cvx_code,
        min(display) as display,
        max(occurred_on) as last_given_on,
        count(*) as doses,
        min(code_sets) as code_sets,
        {{ evaluation_date() }} as evaluated_on
    from immunizations
    group by person_token, code
)

select * from final

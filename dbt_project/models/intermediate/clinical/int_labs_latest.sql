{#-
    The latest result per person and lab code (LOINC) on or before the evaluation date, with
    its value and unit: what "last HbA1c was 8.1 %" reads from. Results without a numeric
    value still count as the latest result (value null).
-#}
with

observations as (
    select * from {{ ref('int_observations') }}
    where
        code_system = 'loinc'
        and code is not null
        and observed_on <= {{ evaluation_date() }}
),

ranked as (
    select
        *,
        row_number() over (
            partition by person_token, code
            order by observed_at desc, observation_token desc nulls last
        ) as result_rank,
        count(*) over (partition by person_token, code) as results
    from observations
),

final as (
    select
        person_token,
        code as loinc_code,
        display,
        value_number,
        unit,
        observed_on as last_observed_on,
        results,
        code_sets,
        {{ evaluation_date() }} as evaluated_on
    from ranked
    where result_rank = 1
)

select * from final

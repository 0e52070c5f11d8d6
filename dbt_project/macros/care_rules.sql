{#-
    Care-gap rules shared by the segments and the journey stage, so "overdue" means the same
    everywhere. Each renders a boolean SQL expression relative to the evaluation date.
-#}

{#- HbA1c overdue: no result in the last 6 months (ADA: at least twice a year). -#}
{% macro hba1c_overdue(last_hba1c_on) -%}
    (
        {{ last_hba1c_on }} is null
        or {{ last_hba1c_on }} < cast({{ evaluation_date() }} - interval '6 months' as date)
    )
{%- endmacro %}

{#- Screening mammogram due: woman aged 50-74 (USPSTF, biennial) without one in 2 years. -#}
{% macro mammogram_due(sex, age_years, last_mammogram_on) -%}
    (
        {{ sex }} = 'female'
        and {{ age_years }} between 50 and 74
        and (
            {{ last_mammogram_on }} is null
            or {{ last_mammogram_on }} < cast({{ evaluation_date() }} - interval '2 years' as date)
        )
    )
{%- endmacro %}

{#-
    The first day of the flu season the evaluation date belongs to (season starts on the
    first day of var flu_season_start_month, August by default), or null when the date falls
    outside the outreach window (after var flu_season_outreach_end_month, March by default,
    and before the next season starts): no flu-shot reminders in summer.
-#}
{% macro flu_season_start() -%}
    {%- set start_month = var('flu_season_start_month', 8) | int -%}
    {%- set end_month = var('flu_season_outreach_end_month', 3) | int -%}
    case
        when extract(month from {{ evaluation_date() }}) >= {{ start_month }}
            then make_date(extract(year from {{ evaluation_date() }})::integer, {{ start_month }}, 1)
        when extract(month from {{ evaluation_date() }}) <= {{ end_month }}
            then make_date(
                extract(year from {{ evaluation_date() }})::integer - 1, {{ start_month }}, 1
            )
    end
{%- endmacro %}

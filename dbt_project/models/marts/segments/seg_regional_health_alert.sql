{#-
    Living patients whose ZIP3 area is under a regional health alert: var health_alert_zip3s
    (a list of three-digit prefixes, e.g. --vars '{health_alert_zip3s: ["770", "773"]}').
    Matches the person's own ZIP3, restricted (small) areas included - the send step needs
    the real area; analysts only ever see dim_persons' restricted ZIP3.
-#}
{%- set zip3s = var('health_alert_zip3s', []) %}
{%- if zip3s is string %}{% set zip3s = zip3s.split(',') | map('trim') | list %}{% endif %}
{%- for zip3 in zip3s %}
    {%- if not modules.re.match('^[0-9]{3}$', zip3 | string) %}
        {{ exceptions.raise_compiler_error("var health_alert_zip3s: '" ~ zip3 ~ "' is not a three-digit ZIP prefix") }}
    {%- endif %}
{%- endfor %}
with

persons as (
    select * from {{ ref('int_persons') }}
),

final as (
    select person_token::text as person_token
    from persons
    where
        is_patient
        and not is_deceased
        {%- if zip3s | length > 0 %}
        and zip3 in ({% for zip3 in zip3s %}'{{ zip3 }}'{{ ', ' if not loop.last }}{% endfor %})
        {%- else %}
        and false
        {%- endif %}
)

select * from final

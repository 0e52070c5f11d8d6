{#-
    Models land in schemas named exactly as configured (staging, intermediate, marts), not
    dbt's default <target_schema>_<custom>: the send step, Dagster and analysts' grants all
    address `marts.audience_membership` and `intermediate.int_consent_events` by name.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}

{#-
    The day "today" means everywhere in the project: var('evaluation_date') (YYYY-MM-DD) when
    set, else the session's current_date. Never hardcode a date in a model.
-#}
{% macro evaluation_date() -%}
    {%- set value = var('evaluation_date', none) -%}
    {%- if value is none or (value | string | trim | lower) in ('', 'none', 'null', 'current_date', 'today') -%}
        current_date
    {%- else -%}
        {%- set text = value | string | trim -%}
        {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
            {{ exceptions.raise_compiler_error("var evaluation_date must be YYYY-MM-DD, got '" ~ text ~ "'") }}
        {%- endif -%}
        cast('{{ text }}' as date)
    {%- endif -%}
{%- endmacro %}

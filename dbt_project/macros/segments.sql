{#-
    Segments are the models tagged 'segment' (everything under models/marts/segments/).
    Each declares meta.purpose, which decides the consent rules its audience goes through.
    The graph is only populated at execution time: these return [] while dbt parses.
-#}
{% macro segment_nodes() -%}
    {%- set found = [] -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values() | sort(attribute='name') -%}
            {%- if node.resource_type == 'model' and 'segment' in node.tags -%}
                {%- do found.append(node) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(found) }}
{%- endmacro %}

{#- A segment's meta (config.meta and top-level meta merged; config wins). -#}
{% macro segment_meta(node) -%}
    {%- set meta = {} -%}
    {%- do meta.update(node.get('meta') or {}) -%}
    {%- do meta.update((node.get('config') or {}).get('meta') or {}) -%}
    {{ return(meta) }}
{%- endmacro %}

{#- The audience a segment feeds: its model name without the 'seg_' prefix. -#}
{% macro segment_audience(node) -%}
    {%- set name = node.name -%}
    {{ return(name[4:] if name.startswith('seg_') else name) }}
{%- endmacro %}

{#- The segment's purpose; compile error if missing or unknown (fail closed). -#}
{% macro segment_purpose(node) -%}
    {%- set purpose = segment_meta(node).get('purpose') -%}
    {%- if purpose not in consent_purposes() -%}
        {{ exceptions.raise_compiler_error(
            "segment " ~ node.name ~ " has meta.purpose " ~ (purpose | string)
            ~ "; expected one of " ~ (consent_purposes() | join(', '))
        ) }}
    {%- endif -%}
    {{ return(purpose) }}
{%- endmacro %}

{#-
    One row per segment/audience with what the send step needs to know about it: its purpose
    (which consent rules apply) and the vault fields it may decrypt for personalization.
    Built from the segments' YAML meta in the graph, so a new segment appears by itself.
-#}
{%- set segments = segment_nodes() %}

with

catalog as (
    {%- for node in segments %}
    {%- set meta = segment_meta(node) %}
    {%- set fields = meta.get('personalization_fields') or [] %}
    {%- if fields is string %}{% set fields = fields.split(',') | map('trim') | list %}{% endif %}
    select
        {{ sql_literal(segment_audience(node)) }}::text as audience,
        {{ sql_literal(node.name) }}::text as segment_model,
        {{ sql_literal(segment_purpose(node)) }}::text as purpose,
        {{ sql_literal(meta.get('description') or node.description) }}::text as description,
        {{ sql_literal(meta.get('owner')) }}::text as owner,
        array[
            {%- for field in fields %}{{ sql_literal(field) }}{{ ', ' if not loop.last }}{% endfor -%}
        ]::text[] as personalization_fields

    union all
    {%- endfor %}

    select
        null::text as audience,
        null::text as segment_model,
        null::text as purpose,
        null::text as description,
        null::text as owner,
        array[]::text[] as personalization_fields
    where false
),

final as (
    select
        audience,
        segment_model,
        purpose,
        regexp_replace(trim(description), '\s+', ' ', 'g') as description,
        owner,
        personalization_fields
    from catalog
)

select * from final

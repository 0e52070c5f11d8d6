{{ config(meta={'dagster': {'ref': {'name': 'segment_catalog'}}}) }}
-- depends_on: {{ ref('segment_catalog') }}
{#-
    Models tagged 'feedback' run after the engine's feedback step, in their own Dagster
    selection: none of them may feed a model, seed or snapshot outside that tag (a direct
    edge check is enough: any path from a feedback node to another node has such an edge).
-#}
{%- set problems = [] -%}
{%- if execute -%}
    {%- for node in graph.nodes.values() -%}
        {%- if node.resource_type in ('model', 'snapshot', 'seed') and 'feedback' not in node.tags -%}
            {%- for parent_id in node.depends_on.nodes -%}
                {%- set parent = graph.nodes.get(parent_id) -%}
                {%- if parent and 'feedback' in parent.tags -%}
                    {%- do problems.append((node.name, parent.name)) -%}
                {%- endif -%}
            {%- endfor -%}
        {%- endif -%}
    {%- endfor -%}
{%- endif -%}

{%- if problems %}
select
    edges.model_name,
    edges.feedback_parent
from (
    values
    {%- for model_name, parent in problems %}
        ({{ sql_literal(model_name) }}, {{ sql_literal(parent) }}){{ ',' if not loop.last }}
    {%- endfor %}
) as edges (model_name, feedback_parent)
{%- else %}
select
    null::text as model_name,
    null::text as feedback_parent
where false
{%- endif %}

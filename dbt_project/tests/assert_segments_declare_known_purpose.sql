{{ config(meta={'dagster': {'ref': {'name': 'segment_catalog'}}}) }}
-- depends_on: {{ ref('segment_catalog') }}
{#-
    Every segment (tag 'segment') must declare meta.purpose from the consent rules
    (treatment, marketing, fundraising, plan_benefits), an owner and a description, and may
    only ask for allowed personalization fields; and every model named seg_* must carry the
    'segment' tag (else it would be neither gated nor catalogued). One row per problem.
-#}
{%- set problems = [] -%}
{%- if execute -%}
    {%- set allowed_fields = var('allowed_personalization_fields', []) -%}
    {%- for node in segment_nodes() -%}
        {%- set meta = segment_meta(node) -%}
        {%- set purpose = meta.get('purpose') -%}
        {%- if purpose is none or purpose == '' -%}
            {%- do problems.append((node.name, 'missing meta.purpose')) -%}
        {%- elif purpose not in consent_purposes() -%}
            {%- do problems.append((node.name, 'unknown purpose ' ~ purpose)) -%}
        {%- endif -%}
        {%- if not meta.get('owner') -%}
            {%- do problems.append((node.name, 'missing meta.owner')) -%}
        {%- endif -%}
        {%- if not (meta.get('description') or node.description) -%}
            {%- do problems.append((node.name, 'missing meta.description')) -%}
        {%- endif -%}
        {%- set fields = meta.get('personalization_fields') or [] -%}
        {%- if fields is string -%}{%- set fields = fields.split(',') | map('trim') | list -%}{%- endif -%}
        {%- for field in fields -%}
            {%- if field not in allowed_fields -%}
                {%- do problems.append((node.name, 'personalization field not allowed: ' ~ field)) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- for node in graph.nodes.values() -%}
        {%- if node.resource_type == 'model' and node.name.startswith('seg_') and 'segment' not in node.tags -%}
            {%- do problems.append((node.name, "seg_ model without the 'segment' tag")) -%}
        {%- endif -%}
    {%- endfor -%}
{%- endif -%}

{%- if problems %}
select
    problems.model_name,
    problems.problem
from (
    values
    {%- for model_name, problem in problems %}
        ({{ sql_literal(model_name) }}, {{ sql_literal(problem) }}){{ ',' if not loop.last }}
    {%- endfor %}
) as problems (model_name, problem)
{%- else %}
select
    null::text as model_name,
    null::text as problem
where false
{%- endif %}

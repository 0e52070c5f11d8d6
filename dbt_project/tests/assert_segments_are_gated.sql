{{ config(meta={'dagster': {'ref': {'name': 'audience_membership'}}}) }}
{#-
    Every segment must be a declared parent of audience_membership (so it is built first and
    gated) and must appear in segment_catalog with its purpose; every audience in
    audience_membership must be a catalogued segment with the same purpose.
-#}
-- depends_on: {{ ref('audience_membership') }}
-- depends_on: {{ ref('segment_catalog') }}
{%- set problems = [] -%}
{%- if execute -%}
    {%- set membership = graph.nodes.get('model.' ~ project_name ~ '.audience_membership') -%}
    {%- set parents = membership.depends_on.nodes if membership else [] -%}
    {%- for node in segment_nodes() -%}
        {%- if node.unique_id not in parents -%}
            {%- do problems.append((node.name, "not a declared parent of audience_membership: add -- depends_on: {{ ref('" ~ node.name ~ "') }}")) -%}
        {%- endif -%}
    {%- endfor -%}
{%- endif %}

with

graph_problems as (
    {%- for model_name, problem in problems %}
    select
        {{ sql_literal(model_name) }}::text as audience,
        {{ sql_literal(problem) }}::text as problem
    union all
    {%- endfor %}
    select
        null::text as audience,
        null::text as problem
    where false
),

catalog as (
    select * from {{ ref('segment_catalog') }}
),

membership_purposes as (
    select distinct
        audience,
        purpose
    from {{ ref('audience_membership') }}
),

expected_segments as (
    {%- for node in segment_nodes() %}
    select
        {{ sql_literal(segment_audience(node)) }}::text as audience,
        {{ sql_literal(segment_meta(node).get('purpose')) }}::text as purpose
    union all
    {%- endfor %}
    select
        null::text as audience,
        null::text as purpose
    where false
),

catalog_problems as (
    select
        expected_segments.audience,
        'segment missing from segment_catalog or catalogued with another purpose' as problem
    from expected_segments
    left join catalog
        on
            expected_segments.audience = catalog.audience
            and expected_segments.purpose = catalog.purpose
    where catalog.audience is null
),

membership_problems as (
    select
        membership_purposes.audience,
        'audience not in segment_catalog or sent under another purpose' as problem
    from membership_purposes
    left join catalog
        on
            membership_purposes.audience = catalog.audience
            and membership_purposes.purpose = catalog.purpose
    where catalog.audience is null
)

select * from graph_problems
union all
select * from catalog_problems
union all
select * from membership_problems

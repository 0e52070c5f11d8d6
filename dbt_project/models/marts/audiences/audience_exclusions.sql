{#-
    Why segment members are not in their audience: per audience and reason, how many persons
    the consent gate kept out on the evaluation date. Aggregates only (no person tokens).

    Reads the segments' tables directly; they are all built before audience_membership,
    which this model follows.
-#}
-- depends_on: {{ ref('audience_membership') }}

{%- set segments = segment_nodes() %}

with

consent_state as (
    select * from {{ ref('int_consent_state') }}
    where channel = 'email'
),

segment_members as (
    {%- for node in segments %}
    select distinct
        {{ sql_literal(segment_audience(node)) }}::text as audience,
        {{ sql_literal(segment_purpose(node)) }}::text as purpose,
        person_token
    from {{ node.relation_name }}

    union all
    {%- endfor %}

    select
        null::text as audience,
        null::text as purpose,
        null::text as person_token
    where false
),

excluded as (
    select
        segment_members.audience,
        segment_members.purpose,
        coalesce(consent_state.reason, 'no_consent_state') as reason,
        segment_members.person_token
    from segment_members
    left join consent_state
        on
            segment_members.person_token = consent_state.person_token
            and segment_members.purpose = consent_state.purpose
    where not coalesce(consent_state.allowed, false)
),

final as (
    select
        audience::text as audience,
        purpose::text as purpose,
        reason::text as reason,
        count(distinct person_token)::bigint as persons,
        {{ evaluation_date() }}::date as evaluated_on
    from excluded
    group by audience, purpose, reason
)

select * from final

{#-
    Why segment members are not in their audience: per audience and reason, how many persons
    the consent gate kept out on the evaluation date. Aggregates only (no person tokens).

    Reads every segment (models tagged 'segment', found in the graph) beside
    audience_membership, not after it. As there, each segment must also be listed below:
    dbt only knows a model's parents from the refs it sees while parsing, and stops with
    "unable to infer all dependencies", naming the line to add, when one is missing.
-#}
-- depends_on: {{ ref('seg_birthday_month') }}
-- depends_on: {{ ref('seg_breast_cancer_screening_due') }}
-- depends_on: {{ ref('seg_diabetes_hba1c_overdue') }}
-- depends_on: {{ ref('seg_flu_vaccine_due') }}
-- depends_on: {{ ref('seg_missed_appointment') }}
-- depends_on: {{ ref('seg_non_openers_last_campaign') }}
-- depends_on: {{ ref('seg_post_procedure_recovery') }}
-- depends_on: {{ ref('seg_reengagement') }}
-- depends_on: {{ ref('seg_regional_health_alert') }}
-- depends_on: {{ ref('seg_upcoming_appointment_reminder') }}
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
    from {{ ref(node.name) }}

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

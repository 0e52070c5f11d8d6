{#-
    Who may be emailed for which audience today: every segment (models tagged 'segment',
    found in the graph) passed through consent_gate for its meta.purpose.

    A new segment file is picked up here automatically. dbt only knows a model's parents from
    refs it sees while parsing, when the graph is still empty, so each segment must also be
    listed below; if one is missing, dbt stops with "unable to infer all dependencies" and
    names the line to add (and the assert_segments_are_gated test flags it).
-#}
-- depends_on: {{ ref('int_consent_state') }}
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

gated as (
    {%- for node in segments %}
    select
        {{ sql_literal(segment_audience(node)) }}::text as audience,
        allowed.person_token,
        allowed.purpose,
        allowed.consent_ref,
        allowed.evaluated_on
    from (
        {{ consent_gate(ref(node.name), segment_purpose(node)) | indent(4) }}
    ) as allowed

    union all
    {%- endfor %}

    -- no segments: an empty, typed relation
    select
        null::text as audience,
        null::text as person_token,
        null::text as purpose,
        null::text as consent_ref,
        null::date as evaluated_on
    where false
),

final as (
    select
        audience::text as audience,
        person_token::text as person_token,
        purpose::text as purpose,
        consent_ref::text as consent_ref,
        evaluated_on::date as evaluated_on
    from gated
)

select * from final

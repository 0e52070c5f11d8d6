{#-
    consent_gate(segment_relation, purpose)

    The ONLY way a segment becomes an audience: keeps the segment's persons whose consent
    state for `purpose` on the evaluation date is allowed (email channel), with the record
    that allows it. Returns person_token, purpose, consent_ref, evaluated_on.

    segment_relation: a relation (ref(...)) or a parenthesised subquery with person_token.
    Unknown purposes fail the compile: nothing is sent under a purpose the rules don't know.
-#}
{% macro consent_gate(segment_relation, purpose) -%}
    {%- if purpose not in consent_purposes() -%}
        {{ exceptions.raise_compiler_error(
            "consent_gate: unknown purpose '" ~ (purpose | string) ~ "'; expected one of "
            ~ (consent_purposes() | join(', '))
        ) }}
    {%- endif -%}
    select distinct
        segment.person_token::text as person_token,
        consent.purpose::text as purpose,
        consent.consent_ref::text as consent_ref,
        consent.evaluated_on::date as evaluated_on
    from {{ segment_relation }} as segment
    inner join {{ ref('int_consent_state') }} as consent
        on segment.person_token = consent.person_token
    where
        consent.purpose = '{{ purpose }}'
        and consent.channel = 'email'
        and consent.allowed
{%- endmacro %}

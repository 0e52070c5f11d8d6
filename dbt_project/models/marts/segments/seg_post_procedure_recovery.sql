{#-
    Living patients who had a procedure that calls for recovery follow-up (code set
    post_procedure_followup: colonoscopy, polypectomy, appendectomy) in the last 14 days.
    Screening and diagnostic procedures (mammography, x-ray, lab draws) are not in the set:
    there is nothing to recover from.
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
),

care_history as (
    select * from {{ ref('int_person_care_history') }}
),

final as (
    select persons.person_token::text as person_token
    from persons
    inner join care_history
        on persons.person_token = care_history.person_token
    where
        not persons.is_deceased
        and care_history.last_followup_procedure_on >= {{ evaluation_date() }} - 14
        and care_history.last_followup_procedure_on <= {{ evaluation_date() }}
)

select * from final

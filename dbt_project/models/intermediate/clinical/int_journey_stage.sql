{#-
    Journey stage per living patient on the evaluation date. Rules, first match wins:

      new       first visit within the last 90 days, or never seen but an appointment booked
      inactive  no visit in 18 months (or never) and nothing booked
      at_risk   a no-show in the last 90 days, or last visit 12-18 months ago with nothing
                booked (drifting toward inactive)
      overdue   an open care gap: diabetic without HbA1c in 6 months, or woman 50-74 without
                a screening mammogram in 2 years (the care_rules macros the segments use)
      active    everyone else: seen within 12 months or booked, no recent no-show, no gap

    Patients only (FHIR/HL7 record); CRM-only contacts have no care journey and no row.
-#}
with

persons as (
    select * from {{ ref('int_persons') }}
    where is_patient and not is_deceased
),

utilization as (
    select * from {{ ref('int_utilization') }}
),

care_history as (
    select * from {{ ref('int_person_care_history') }}
),

facts as (
    select
        persons.person_token,
        utilization.first_visit_on,
        utilization.last_visit_on,
        utilization.next_appointment_on,
        coalesce(utilization.no_shows_90d, 0) as no_shows_90d,
        (
            coalesce(care_history.has_active_diabetes, false)
            and {{ hba1c_overdue('care_history.last_hba1c_on') }}
        ) as is_hba1c_overdue,
        coalesce(
            {{ mammogram_due('persons.sex', 'persons.age_years', 'care_history.last_mammogram_on') }}
            and utilization.next_mammography_appointment_on is null,
            false
        ) as is_mammogram_due
    from persons
    left join utilization
        on persons.person_token = utilization.person_token
    left join care_history
        on persons.person_token = care_history.person_token
),

staged as (
    select
        *,
        case
            when
                first_visit_on > {{ evaluation_date() }} - 90
                or (first_visit_on is null and next_appointment_on is not null)
                then 'new'
            when
                (
                    last_visit_on is null
                    or last_visit_on < cast({{ evaluation_date() }} - interval '18 months' as date)
                )
                and next_appointment_on is null
                then 'inactive'
            when
                no_shows_90d > 0
                or (
                    last_visit_on < cast({{ evaluation_date() }} - interval '12 months' as date)
                    and next_appointment_on is null
                )
                then 'at_risk'
            when is_hba1c_overdue or is_mammogram_due then 'overdue'
            else 'active'
        end as journey_stage
    from facts
),

final as (
    select
        person_token,
        journey_stage,
        (is_hba1c_overdue or is_mammogram_due) as has_open_care_gap,
        no_shows_90d,
        {{ evaluation_date() }} - last_visit_on as days_since_last_visit,
        {{ evaluation_date() }} as evaluated_on
    from staged
)

select * from final

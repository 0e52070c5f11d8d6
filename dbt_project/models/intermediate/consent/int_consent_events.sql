{#-
    Every consent-relevant event per person, in the shape domain/consent.py reads
    (ConsentEvent): the send step loads this table and re-runs the rules at push time.

    FHIR Consent   active -> its decision (permit/deny) for its purpose, from
                   coalesce(period start, recorded, record time), expiring at period end;
                   inactive/rejected -> deny of its purpose at coalesce(recorded, record time).
    CRM contact    (landing keeps its latest version) marketing authorization signed -> permit
                   (marketing) until its expiry; revoked -> deny (marketing); email opt-in
                   true/false -> opt_in/opt_out at the record time; unsubscribed -> unsubscribe.
    Engine         suppressions (unsubscribe, hard_bounce, complaint) at their time.

    One row per person x purpose x event type x day: when several records say the same thing
    on the same day, the most recently recorded one is kept, so the deciding event (and its
    source_ref) is never ambiguous for either implementation. Dates are UTC days.
-#}
with

xref as (
    select * from {{ ref('stg_hub__person_xref') }}
),

fhir_consents as (
    select * from {{ ref('stg_fhir__consents') }}
),

-- One row per contact: landing keeps each contact's newest version (natural key). Read four
-- times below, and not materialized: scanning the table again is cheaper than PostgreSQL's
-- temporary copy of it (10.9 -> 8.1 s at 1M).
crm_contacts as not materialized (
    select * from {{ ref('stg_crm__contacts') }}
),

engine_suppressions as (
    select * from {{ ref('stg_engine__suppressions') }}
),

fhir_events as (
    select
        subject_token,
        purpose,
        case when status = 'active' then decision else 'deny' end as event_type,
        case
            when status = 'active'
                then coalesce(
                    period_start_on,
                    {{ to_utc_date('recorded_at') }},
                    {{ to_utc_date('record_updated_at') }}
                )
            else {{ to_utc_date('coalesce(recorded_at, record_updated_at)') }}
        end as effective_on,
        case when status = 'active' then period_end_on end as expires_on,
        'fhir' as source,
        consent_token as source_ref,
        coalesce(record_updated_at, recorded_at, loaded_at) as recorded_at
    from fhir_consents
    where
        purpose in {{ consent_purposes_sql_list() }}
        and (
            (status = 'active' and decision in ('permit', 'deny'))
            or status in ('inactive', 'rejected')
        )
),

crm_events as (
    select
        subject_token,
        'marketing' as purpose,
        'permit' as event_type,
        marketing_auth_signed_on as effective_on,
        marketing_auth_expires_on as expires_on,
        'crm' as source,
        subject_token as source_ref,
        coalesce(record_updated_at, loaded_at) as recorded_at
    from crm_contacts
    where marketing_auth_signed_on is not null

    union all

    select
        subject_token,
        'marketing' as purpose,
        'deny' as event_type,
        marketing_auth_revoked_on as effective_on,
        null::date as expires_on,
        'crm' as source,
        subject_token as source_ref,
        coalesce(record_updated_at, loaded_at) as recorded_at
    from crm_contacts
    where marketing_auth_revoked_on is not null

    union all

    select
        subject_token,
        null::text as purpose,
        case when is_email_opted_in then 'opt_in' else 'opt_out' end as event_type,
        {{ to_utc_date('record_updated_at') }} as effective_on,
        null::date as expires_on,
        'crm' as source,
        subject_token as source_ref,
        coalesce(record_updated_at, loaded_at) as recorded_at
    from crm_contacts
    where is_email_opted_in is not null

    union all

    select
        subject_token,
        null::text as purpose,
        'unsubscribe' as event_type,
        {{ to_utc_date('unsubscribed_at') }} as effective_on,
        null::date as expires_on,
        'crm' as source,
        subject_token as source_ref,
        coalesce(record_updated_at, loaded_at) as recorded_at
    from crm_contacts
    where unsubscribed_at is not null
),

subject_events as (
    select * from fhir_events
    union all
    select * from crm_events
),

person_events as (
    select
        xref.person_token,
        subject_events.purpose,
        subject_events.event_type,
        subject_events.effective_on,
        subject_events.expires_on,
        subject_events.source,
        subject_events.source_ref,
        subject_events.recorded_at
    from subject_events
    inner join xref
        on subject_events.subject_token = xref.subject_token

    union all

    select
        person_token,
        null::text as purpose,
        event_type,
        {{ to_utc_date('suppressed_at') }} as effective_on,
        null::date as expires_on,
        'engine' as source,
        event_id as source_ref,
        coalesce(received_at, suppressed_at) as recorded_at
    from engine_suppressions
    where event_type in ('unsubscribe', 'hard_bounce', 'complaint')
),

deduplicated as (
    select
        *,
        row_number() over (
            partition by person_token, purpose, event_type, effective_on
            order by recorded_at desc nulls last, source asc, source_ref asc
        ) as event_rank
    from person_events
    where
        person_token is not null
        and effective_on is not null
),

final as (
    select
        person_token::text as person_token,
        purpose::text as purpose,
        event_type::text as event_type,
        effective_on::date as effective_on,
        expires_on::date as expires_on,
        source::text as source,
        source_ref::text as source_ref
    from deduplicated
    where event_rank = 1
)

select * from final

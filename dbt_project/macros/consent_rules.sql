{#-
    The consent rules of domain/consent.py, as data. Keep the two in step: the send step
    re-evaluates the same rules in Python at push time.

    needs_permit         the purpose needs an explicit, unexpired permit (else: allowed until denied)
    unsubscribe_applies  the global email unsubscribe / opt-out stops it (CAN-SPAM)
    needs_opt_in         the person must have opted in to email
-#}
{% macro consent_purpose_rules() -%}
    {{ return([
        {'purpose': 'treatment', 'needs_permit': false, 'unsubscribe_applies': false, 'needs_opt_in': false},
        {'purpose': 'marketing', 'needs_permit': true, 'unsubscribe_applies': true, 'needs_opt_in': true},
        {'purpose': 'fundraising', 'needs_permit': false, 'unsubscribe_applies': true, 'needs_opt_in': false},
        {'purpose': 'plan_benefits', 'needs_permit': true, 'unsubscribe_applies': true, 'needs_opt_in': false},
    ]) }}
{%- endmacro %}

{% macro consent_purposes() -%}
    {{ return(consent_purpose_rules() | map(attribute='purpose') | list) }}
{%- endmacro %}

{#- The rules as a relation: (purpose, needs_permit, unsubscribe_applies, needs_opt_in). -#}
{% macro consent_purpose_rules_sql() -%}
    select
        rules.purpose,
        rules.needs_permit,
        rules.unsubscribe_applies,
        rules.needs_opt_in
    from (
        values
        {%- for rule in consent_purpose_rules() %}
            ('{{ rule.purpose }}'::text, {{ rule.needs_permit }}, {{ rule.unsubscribe_applies }}, {{ rule.needs_opt_in }}){{ ',' if not loop.last }}
        {%- endfor %}
    ) as rules (purpose, needs_permit, unsubscribe_applies, needs_opt_in)
{%- endmacro %}

{#- A SQL list of the known purposes, for `in (...)`. -#}
{% macro consent_purposes_sql_list() -%}
    ({% for purpose in consent_purposes() %}'{{ purpose }}'{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}

{#-
    consent_decisions(person_days, consent_events)

    One select that decides, for every (person_token, as_of) row of `person_days` and every
    purpose, whether email for that purpose may go to the person on that day - the rules of
    domain/consent.py::consent_state_on, in order:

      1. a hard bounce or complaint on or before the day excludes every purpose
         (the earliest one is reported; hard_bounce first on a same-day tie);
      2. channel state = latest of opt_in / opt_out / unsubscribe (same day: unsubscribe >
         opt_out > opt_in); for purposes the unsubscribe applies to, unsubscribe ->
         'unsubscribed', opt_out -> 'not_opted_in';
      3. purposes needing opt-in (marketing) need the channel state to be opt_in;
      4. the deciding authorization = latest permit/deny of the purpose (same day: deny wins);
         none -> no_authorization where a permit is needed, else ok; deny -> 'revoked' when a
         permit for the purpose was ever given on or before the day, else 'denied'; a permit is
         'expired' from the day after its expires_on.

    person_days: relation with person_token, as_of (date).
    consent_events: relation shaped like int_consent_events (one row per person x purpose x
    event_type x day, as int_consent_events guarantees).
    Returns person_token, as_of, purpose, allowed, reason, consent_ref.
-#}
{% macro consent_decisions(person_days, consent_events) -%}
    with

    purposes as (
        {{ consent_purpose_rules_sql() }}
    ),

    days as (
        select distinct
            person_token,
            as_of
        from {{ person_days }}
    ),

    past_events as (
        select
            days.person_token,
            days.as_of,
            events.purpose,
            events.event_type,
            events.effective_on,
            events.expires_on,
            events.source_ref
        from days
        inner join {{ consent_events }} as events
            on
                days.person_token = events.person_token
                and events.effective_on <= days.as_of
    ),

    suppression_ranked as (
        select
            person_token,
            as_of,
            event_type,
            source_ref,
            row_number() over (
                partition by person_token, as_of
                order by
                    effective_on asc,
                    case event_type when 'hard_bounce' then 0 else 1 end asc,
                    source_ref asc
            ) as event_rank
        from past_events
        where event_type in ('hard_bounce', 'complaint')
    ),

    first_suppression as (
        select
            person_token,
            as_of,
            event_type,
            source_ref
        from suppression_ranked
        where event_rank = 1
    ),

    channel_ranked as (
        select
            person_token,
            as_of,
            event_type,
            source_ref,
            row_number() over (
                partition by person_token, as_of
                order by
                    effective_on desc,
                    case event_type
                        when 'unsubscribe' then 2
                        when 'opt_out' then 1
                        else 0
                    end desc,
                    source_ref asc
            ) as event_rank
        from past_events
        where event_type in ('opt_in', 'opt_out', 'unsubscribe')
    ),

    channel_state as (
        select
            person_token,
            as_of,
            event_type,
            source_ref
        from channel_ranked
        where event_rank = 1
    ),

    authorization_ranked as (
        select
            person_token,
            as_of,
            purpose,
            event_type,
            expires_on,
            source_ref,
            row_number() over (
                partition by person_token, as_of, purpose
                order by
                    effective_on desc,
                    case event_type when 'deny' then 1 else 0 end desc,
                    source_ref asc
            ) as event_rank
        from past_events
        where event_type in ('permit', 'deny')
    ),

    deciding_authorization as (
        select
            person_token,
            as_of,
            purpose,
            event_type,
            expires_on,
            source_ref
        from authorization_ranked
        where event_rank = 1
    ),

    permits_given as (
        select distinct
            person_token,
            as_of,
            purpose
        from past_events
        where event_type = 'permit'
    ),

    evaluated as (
        select
            days.person_token,
            days.as_of,
            purposes.purpose,
            case
                when first_suppression.event_type = 'hard_bounce' then 'hard_bounced'
                when first_suppression.event_type = 'complaint' then 'complained'
                when
                    purposes.unsubscribe_applies
                    and channel_state.event_type = 'unsubscribe'
                    then 'unsubscribed'
                when
                    purposes.unsubscribe_applies
                    and channel_state.event_type = 'opt_out'
                    then 'not_opted_in'
                when
                    purposes.needs_opt_in
                    and coalesce(channel_state.event_type, '') <> 'opt_in'
                    then 'not_opted_in'
                when deciding_authorization.event_type is null and purposes.needs_permit
                    then 'no_authorization'
                when deciding_authorization.event_type is null then 'ok'
                when
                    deciding_authorization.event_type = 'deny'
                    and permits_given.purpose is not null
                    then 'revoked'
                when deciding_authorization.event_type = 'deny' then 'denied'
                when
                    deciding_authorization.expires_on is not null
                    and days.as_of > deciding_authorization.expires_on
                    then 'expired'
                else 'ok'
            end as reason,
            case
                when first_suppression.event_type is not null then first_suppression.source_ref
                when
                    purposes.unsubscribe_applies
                    and channel_state.event_type in ('unsubscribe', 'opt_out')
                    then channel_state.source_ref
                when
                    purposes.needs_opt_in
                    and coalesce(channel_state.event_type, '') <> 'opt_in'
                    then null
                else deciding_authorization.source_ref
            end as consent_ref
        from days
        cross join purposes
        left join first_suppression
            on
                days.person_token = first_suppression.person_token
                and days.as_of = first_suppression.as_of
        left join channel_state
            on
                days.person_token = channel_state.person_token
                and days.as_of = channel_state.as_of
        left join deciding_authorization
            on
                days.person_token = deciding_authorization.person_token
                and days.as_of = deciding_authorization.as_of
                and purposes.purpose = deciding_authorization.purpose
        left join permits_given
            on
                days.person_token = permits_given.person_token
                and days.as_of = permits_given.as_of
                and purposes.purpose = permits_given.purpose
    )

    select
        person_token,
        as_of,
        purpose,
        reason = 'ok' as allowed,
        reason,
        consent_ref
    from evaluated
{%- endmacro %}

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
    {#- The long form of consent_decisions_wide: one row per person x day x purpose. -#}
    select
        wide.person_token,
        wide.as_of,
        per_purpose.purpose,
        per_purpose.reason = 'ok' as allowed,
        per_purpose.reason,
        per_purpose.consent_ref
    from (
        {{ consent_decisions_wide(person_days, consent_events) | indent(8) }}
    ) as wide
    cross join lateral (
        values
        {%- for rule in consent_purpose_rules() %}
            ('{{ rule.purpose }}'::text, wide.reason_{{ rule.purpose }}, wide.consent_ref_{{ rule.purpose }}){{ ',' if not loop.last }}
        {%- endfor %}
    ) as per_purpose (purpose, reason, consent_ref)
{%- endmacro %}

{#-
    consent_decisions_wide(person_days, consent_events)

    The decisions of consent_decisions, one row per (person_token, as_of) with a
    reason_<purpose> and consent_ref_<purpose> column per purpose of consent_purpose_rules.

    How (performance): one sort, linear in rows. The old form joined every requested day to
    every earlier event of the person and sorted the product several times (int_consent_history
    was the slowest model). Here every rule is a running aggregate over one timeline per
    person, ordered by day, where requested days sit after the events of the same day (an
    event on as_of counts), and the purposes are columns (known when compiling), not rows:
    - channel and authorization: events are first reduced to the deciding one per day (the
      rules' tie-breaks), keyed as text[] [day, event_type, source_ref, expires_on] with a day
      encoding that sorts as text (consent_day_key), so the running max of the key is the
      latest event on or before the day;
    - suppression: the earliest suppression overall is the earliest one on or before any day
      on which one exists, so one row per person suffices (it applies from its day);
    - "a permit for the purpose was ever given on or before the day": running bool_or.
    Callers ordering by (person_token, as_of) reuse the same sort.
-#}
{% macro consent_decisions_wide(person_days, consent_events) -%}
    with

    days as (
        select distinct
            person_token,
            as_of
        from {{ person_days }}
    ),

    first_suppression as (
        select distinct on (person_token)
            person_token,
            effective_on,
            event_type,
            source_ref
        from {{ consent_events }}
        where event_type in ('hard_bounce', 'complaint')
        order by
            person_token,
            effective_on asc,
            case event_type when 'hard_bounce' then 0 else 1 end asc,
            source_ref asc
    ),

    channel_by_day as (
        select distinct on (person_token, effective_on)
            person_token,
            effective_on,
            event_type,
            source_ref
        from {{ consent_events }}
        where event_type in ('opt_in', 'opt_out', 'unsubscribe')
        order by
            person_token,
            effective_on,
            case event_type
                when 'unsubscribe' then 2
                when 'opt_out' then 1
                else 0
            end desc,
            source_ref asc
    ),

    authorization_by_day as (
        select distinct on (person_token, purpose, effective_on)
            person_token,
            purpose,
            effective_on,
            event_type,
            expires_on,
            source_ref,
            -- before distinct on: a permit on a day whose deny wins still counts as given
            bool_or(event_type = 'permit') over (
                partition by person_token, purpose, effective_on
            ) as has_permit
        from {{ consent_events }}
        where
            event_type in ('permit', 'deny')
            and purpose in {{ consent_purposes_sql_list() }}
        order by
            person_token,
            purpose,
            effective_on,
            case event_type when 'deny' then 1 else 0 end desc,
            source_ref asc
    ),

    timeline as (
        select
            person_token,
            as_of,
            true as is_request,
            null::text as purpose,
            null::text [] as channel_key,
            null::text [] as authorization_key,
            null::text [] as suppression_key,
            null::boolean as has_permit
        from days

        union all

        select
            person_token,
            effective_on as as_of,
            false as is_request,
            null::text as purpose,
            array[
                {{ consent_day_key('effective_on') }}, event_type, source_ref
            ] as channel_key,
            null::text [] as authorization_key,
            null::text [] as suppression_key,
            null::boolean as has_permit
        from channel_by_day

        union all

        select
            person_token,
            effective_on as as_of,
            false as is_request,
            purpose,
            null::text [] as channel_key,
            array[
                {{ consent_day_key('effective_on') }}, event_type, source_ref, expires_on::text
            ] as authorization_key,
            null::text [] as suppression_key,
            has_permit
        from authorization_by_day

        union all

        select
            person_token,
            effective_on as as_of,
            false as is_request,
            null::text as purpose,
            null::text [] as channel_key,
            null::text [] as authorization_key,
            array[event_type, source_ref] as suppression_key,
            null::boolean as has_permit
        from first_suppression
    ),

    running as (
        select
            person_token,
            as_of,
            is_request,
            max(channel_key) over in_order as channel_key,
            max(suppression_key) over in_order as suppression_key
            {%- for rule in consent_purpose_rules() %},
            max(authorization_key) filter (where purpose = '{{ rule.purpose }}') over in_order
                as authorization_key_{{ rule.purpose }},
            coalesce(
                bool_or(has_permit) filter (where purpose = '{{ rule.purpose }}') over in_order,
                false
            ) as permit_given_{{ rule.purpose }}
            {%- endfor %}
        from timeline
        window in_order as (
            partition by person_token
            order by as_of asc, is_request asc
            rows between unbounded preceding and current row
        )
    ),

    states as (
        select
            person_token,
            as_of,
            suppression_key[1] as suppression_type,
            suppression_key[2] as suppression_ref,
            channel_key[2] as channel_type,
            channel_key[3] as channel_ref
            {%- for rule in consent_purpose_rules() %},
            authorization_key_{{ rule.purpose }}[2] as authorization_type_{{ rule.purpose }},
            authorization_key_{{ rule.purpose }}[3] as authorization_ref_{{ rule.purpose }},
            authorization_key_{{ rule.purpose }}[4]::date
                as authorization_expires_on_{{ rule.purpose }},
            permit_given_{{ rule.purpose }}
            {%- endfor %}
        from running
        where is_request
    )

    select
        person_token,
        as_of
        {%- for rule in consent_purpose_rules() %}
        {%- set p = rule.purpose %},
        case
            when suppression_type = 'hard_bounce' then 'hard_bounced'
            when suppression_type = 'complaint' then 'complained'
            {%- if rule.unsubscribe_applies %}
            when channel_type = 'unsubscribe' then 'unsubscribed'
            when channel_type = 'opt_out' then 'not_opted_in'
            {%- endif %}
            {%- if rule.needs_opt_in %}
            when coalesce(channel_type, '') <> 'opt_in' then 'not_opted_in'
            {%- endif %}
            when authorization_type_{{ p }} is null then
                {{ "'no_authorization'" if rule.needs_permit else "'ok'" }}
            when authorization_type_{{ p }} = 'deny' and permit_given_{{ p }} then 'revoked'
            when authorization_type_{{ p }} = 'deny' then 'denied'
            when
                authorization_expires_on_{{ p }} is not null
                and as_of > authorization_expires_on_{{ p }}
                then 'expired'
            else 'ok'
        end as reason_{{ p }},
        case
            when suppression_type is not null then suppression_ref
            {%- if rule.unsubscribe_applies %}
            when channel_type in ('unsubscribe', 'opt_out') then channel_ref
            {%- endif %}
            {%- if rule.needs_opt_in %}
            when coalesce(channel_type, '') <> 'opt_in' then null
            {%- endif %}
            else authorization_ref_{{ p }}
        end as consent_ref_{{ p }}
        {%- endfor %}
    from states
{%- endmacro %}

{#-
    A date as text that sorts like the date (Julian day number, zero-padded: every valid
    PostgreSQL date has a non-negative one of at most 10 digits), for the text[] keys above.
-#}
{% macro consent_day_key(column) -%}
    lpad(to_char(({{ column }})::timestamp, 'J'), 10, '0')
{%- endmacro %}

{#-
    consent_events_digest(): aggregate over a person's rows of int_consent_events that
    changes whenever any event the rules read changes (a count and a sum of 64-bit row
    hashes: order-independent, so PostgreSQL aggregates by hashing, with no sort per
    person). int_consent_digests keeps it for the send step; int_consent_history keeps it
    to recompute only the people whose events changed. Its inputs are tokens, codes and
    dates, never PHI.
-#}
{% macro consent_events_digest() -%}
    count(*)::text || ':' || sum(
        hashtextextended(row(event_type, effective_on, purpose, expires_on, source_ref)::text, 0)
    )::text
{%- endmacro %}

{#-
    drop_histories_without_events(): int_consent_history's pre-hook. An incremental build
    rewrites the people it recomputes; people who no longer have any consent event (moved
    to another person by a merge, or forgotten) would keep their old intervals, so their
    rows go first. Nothing to do when the table is built from scratch.
-#}
{% macro drop_histories_without_events() -%}
    {%- if is_incremental() %}
    delete from {{ this }} as kept
    where not exists (
        select 1 from {{ ref('int_consent_events') }} as events
        where events.person_token = kept.person_token
    )
    {%- else %}
    select 1
    {%- endif %}
{%- endmacro %}

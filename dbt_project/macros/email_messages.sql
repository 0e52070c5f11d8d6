{#-
    email_messages(events)

    Engine events -> one row per message (a send to one person for one audience), shared by
    the behavioral model (history source) and the feedback marts (this run's events), which
    must not read each other (Dagster would see a cycle).

    events: relation shaped like stg_engine__events. Events are deduplicated by event_id
    (first received copy wins) and attributed to the latest 'sent' of the same destination,
    audience and person at or before them; events with no 'sent' before them (an engine that
    does not report sends) start a message at their own time. Opens count only when human
    (machine opens - privacy-proxy prefetches the engine flags - are kept apart); a click
    counts as engagement even without a tracked open (images blocked).
-#}
{% macro email_messages(events) -%}
    with

    deduplicated as (
        select distinct on (event_id) *
        from {{ events }}
        where person_token is not null
        order by event_id asc, received_at asc, occurred_at asc
    ),

    attributed as (
        select
            *,
            coalesce(
                max(case when event_type = 'sent' then occurred_at end) over (
                    partition by destination, audience, person_token
                    order by occurred_at asc, (event_type <> 'sent') asc
                    rows between unbounded preceding and current row
                ),
                min(occurred_at) over (partition by destination, audience, person_token)
            ) as message_sent_at
        from deduplicated
    ),

    messages as (
        select
            destination,
            audience,
            person_token,
            message_sent_at as sent_at,
            {{ to_utc_date('message_sent_at') }} as sent_on,
            bool_or(event_type = 'delivered') as is_delivered,
            bool_or(event_type = 'bounce' and bounce_type = 'hard') as is_hard_bounced,
            bool_or(
                event_type = 'bounce' and coalesce(bounce_type, '') <> 'hard'
            ) as is_soft_bounced,
            min(occurred_at) filter (
                where event_type = 'open' and not is_machine_open
            ) as first_open_at,
            count(*) filter (where event_type = 'open' and not is_machine_open) as human_opens,
            bool_or(event_type = 'open' and is_machine_open) as has_machine_open,
            min(occurred_at) filter (where event_type = 'click') as first_click_at,
            count(*) filter (where event_type = 'click') as clicks,
            bool_or(event_type = 'unsubscribe') as is_unsubscribed,
            bool_or(event_type = 'complaint') as is_complained,
            max(recipient_domain) as recipient_domain
        from attributed
        group by destination, audience, person_token, message_sent_at
    )

    select
        destination::text as destination,
        audience::text as audience,
        person_token::text as person_token,
        sent_at::timestamptz as sent_at,
        sent_on::date as sent_on,
        (is_delivered and not is_hard_bounced)::boolean as is_delivered,
        is_hard_bounced::boolean as is_hard_bounced,
        is_soft_bounced::boolean as is_soft_bounced,
        (human_opens > 0 or clicks > 0)::boolean as is_opened,
        (clicks > 0)::boolean as is_clicked,
        first_open_at::timestamptz as first_open_at,
        human_opens::bigint as human_opens,
        has_machine_open::boolean as has_machine_open,
        first_click_at::timestamptz as first_click_at,
        clicks::bigint as clicks,
        is_unsubscribed::boolean as is_unsubscribed,
        is_complained::boolean as is_complained,
        recipient_domain::text as recipient_domain
    from messages
{%- endmacro %}

{#-
    Engagement per audience: event counts (opens are human opens only - privacy-proxy
    prefetches flagged machine_open are excluded) and the message funnel with its drop-off
    at each step (sent -> delivered -> opened -> clicked). Rates are per delivered message.
    No person-level data.
-#}
with

email_events as (
    select * from {{ ref('fct_email_events') }}
),

messages as (
    select * from {{ ref('fct_email_messages') }}
),

catalog as (
    select * from {{ ref('segment_catalog') }}
),

event_counts as (
    select
        audience,
        count(*) filter (where event_type = 'sent') as sent,
        count(*) filter (where event_type = 'delivered') as delivered,
        count(*) filter (where event_type = 'open' and not machine_open) as opens,
        count(*) filter (where event_type = 'open' and machine_open) as machine_opens,
        count(*) filter (where event_type = 'click') as clicks,
        count(*) filter (where event_type = 'bounce') as bounces,
        count(*) filter (
            where event_type = 'bounce' and bounce_type = 'hard'
        ) as hard_bounces,
        count(*) filter (where event_type = 'complaint') as complaints,
        count(*) filter (where event_type = 'unsubscribe') as unsubscribes
    from email_events
    group by audience
),

funnel as (
    select
        audience,
        count(*) as messages,
        count(*) filter (where is_delivered) as delivered_messages,
        count(*) filter (where is_opened) as opened_messages,
        count(*) filter (where is_clicked) as clicked_messages
    from messages
    group by audience
),

final as (
    select
        event_counts.audience::text as audience,
        catalog.purpose::text as purpose,
        event_counts.sent::bigint as sent,
        event_counts.delivered::bigint as delivered,
        event_counts.opens::bigint as opens,
        event_counts.machine_opens::bigint as machine_opens,
        event_counts.clicks::bigint as clicks,
        event_counts.bounces::bigint as bounces,
        event_counts.hard_bounces::bigint as hard_bounces,
        event_counts.complaints::bigint as complaints,
        event_counts.unsubscribes::bigint as unsubscribes,
        round(event_counts.opens::numeric / nullif(event_counts.delivered, 0), 4) as open_rate,
        round(event_counts.clicks::numeric / nullif(event_counts.delivered, 0), 4) as click_rate,
        coalesce(funnel.messages, 0)::bigint as messages,
        coalesce(funnel.delivered_messages, 0)::bigint as delivered_messages,
        coalesce(funnel.opened_messages, 0)::bigint as opened_messages,
        coalesce(funnel.clicked_messages, 0)::bigint as clicked_messages,
        round(
            1 - funnel.delivered_messages::numeric / nullif(funnel.messages, 0), 4
        ) as delivery_drop_off,
        round(
            1 - funnel.opened_messages::numeric / nullif(funnel.delivered_messages, 0), 4
        ) as open_drop_off,
        round(
            1 - funnel.clicked_messages::numeric / nullif(funnel.opened_messages, 0), 4
        ) as click_drop_off
    from event_counts
    left join funnel
        on event_counts.audience is not distinct from funnel.audience
    left join catalog
        on event_counts.audience = catalog.audience
)

select * from final

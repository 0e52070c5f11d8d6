{#-
    Engagement per audience, counts of events. Opens are human opens only (privacy-proxy
    prefetches flagged machine_open are excluded); rates are per delivered message.
-#}
with

email_events as (
    select * from {{ ref('fct_email_events') }}
),

counts as (
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

final as (
    select
        audience,
        sent,
        delivered,
        opens,
        machine_opens,
        clicks,
        bounces,
        hard_bounces,
        complaints,
        unsubscribes,
        round(opens::numeric / nullif(delivered, 0), 4) as open_rate,
        round(clicks::numeric / nullif(delivered, 0), 4) as click_rate
    from counts
)

select * from final

{#-
    Campaign funnels: per campaign - one audience's send on one UTC day - how many messages
    were sent, delivered, opened (by a human) and clicked, and the conversion and drop-off
    between the steps. Counts only.
-#}
with

messages as (
    select * from {{ ref('fct_email_messages') }}
),

steps as (
    select
        destination,
        audience,
        sent_on,
        count(*) as sent,
        count(*) filter (where is_delivered) as delivered,
        count(*) filter (where is_opened) as opened,
        count(*) filter (where is_clicked) as clicked,
        count(*) filter (where is_hard_bounced) as hard_bounced,
        count(*) filter (where is_unsubscribed) as unsubscribed,
        count(*) filter (where is_complained) as complained
    from messages
    group by destination, audience, sent_on
),

final as (
    select
        destination::text as destination,
        audience::text as audience,
        sent_on::date as campaign_sent_on,
        sent::bigint as sent,
        delivered::bigint as delivered,
        opened::bigint as opened,
        clicked::bigint as clicked,
        hard_bounced::bigint as hard_bounced,
        unsubscribed::bigint as unsubscribed,
        complained::bigint as complained,
        round(delivered::numeric / nullif(sent, 0), 4) as delivery_rate,
        round(opened::numeric / nullif(delivered, 0), 4) as open_rate,
        round(clicked::numeric / nullif(opened, 0), 4) as click_to_open_rate,
        (sent - delivered)::bigint as dropped_before_delivery,
        (delivered - opened)::bigint as dropped_before_open,
        (opened - clicked)::bigint as dropped_before_click
    from steps
)

select * from final

{#-
    Deliverability per recipient domain (domain only - e.g. example.com, rare domains as
    'other' - never an address): messages, deliveries, hard and soft bounces, complaints and
    their rates. Messages whose domain the engine did not report count under 'unknown'.
-#}
with

messages as (
    select * from {{ ref('fct_email_messages') }}
),

per_domain as (
    select
        coalesce(recipient_domain, 'unknown') as recipient_domain,
        count(*) as messages,
        count(*) filter (where is_delivered) as delivered,
        count(*) filter (where is_hard_bounced) as hard_bounces,
        count(*) filter (where is_soft_bounced) as soft_bounces,
        count(*) filter (where is_complained) as complaints
    from messages
    group by coalesce(recipient_domain, 'unknown')
),

final as (
    select
        recipient_domain::text as recipient_domain,
        messages::bigint as messages,
        delivered::bigint as delivered,
        hard_bounces::bigint as hard_bounces,
        soft_bounces::bigint as soft_bounces,
        complaints::bigint as complaints,
        round(delivered::numeric / nullif(messages, 0), 4) as delivery_rate,
        round(hard_bounces::numeric / nullif(messages, 0), 4) as hard_bounce_rate,
        round(complaints::numeric / nullif(delivered, 0), 4) as complaint_rate
    from per_domain
)

select * from final

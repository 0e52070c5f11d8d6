{#-
    Email behavior per person on the evaluation date, from the engagement history: human
    opens and clicks over the last 30 and 90 days, messages delivered, and engagement
    recency. Machine opens (privacy-proxy prefetches) never count as engagement; a click
    does, even without a tracked open. Only events up to the end of the evaluation date count.
    One row per person the engine has reported on.
-#}
with

events as (
    select distinct on (event_id)
        event_id,
        person_token,
        event_type,
        is_machine_open,
        {{ to_utc_date('occurred_at') }} as occurred_on
    from {{ ref('stg_engine_history__events') }}
    where person_token is not null
    order by event_id asc, received_at asc
),

past_events as (
    select
        *,
        (event_type = 'open' and not is_machine_open) as is_human_open,
        (event_type = 'open' and not is_machine_open) or event_type = 'click' as is_engagement
    from events
    where occurred_on <= {{ evaluation_date() }}
),

per_person as (
    select
        person_token,
        count(*) filter (
            where is_human_open and occurred_on > {{ evaluation_date() }} - 30
        ) as opens_30d,
        count(*) filter (
            where is_human_open and occurred_on > {{ evaluation_date() }} - 90
        ) as opens_90d,
        count(*) filter (
            where event_type = 'click' and occurred_on > {{ evaluation_date() }} - 30
        ) as clicks_30d,
        count(*) filter (
            where event_type = 'click' and occurred_on > {{ evaluation_date() }} - 90
        ) as clicks_90d,
        count(*) filter (
            where event_type = 'delivered' and occurred_on > {{ evaluation_date() }} - 90
        ) as delivered_90d,
        count(*) filter (
            where event_type = 'open' and is_machine_open and occurred_on > {{ evaluation_date() }} - 90
        ) as machine_opens_90d,
        max(occurred_on) filter (where is_human_open) as last_open_on,
        max(occurred_on) filter (where event_type = 'click') as last_click_on,
        max(occurred_on) filter (where is_engagement) as last_engaged_on,
        max(occurred_on) filter (where event_type = 'delivered') as last_delivered_on
    from past_events
    group by person_token
),

final as (
    select
        person_token,
        opens_30d,
        opens_90d,
        clicks_30d,
        clicks_90d,
        delivered_90d,
        machine_opens_90d,
        last_open_on,
        last_click_on,
        last_engaged_on,
        last_delivered_on,
        {{ evaluation_date() }} - last_engaged_on as days_since_last_engagement,
        case
            when last_engaged_on > {{ evaluation_date() }} - 30 then 'engaged_30d'
            when last_engaged_on > {{ evaluation_date() }} - 90 then 'engaged_90d'
            when last_engaged_on is not null then 'lapsed'
            when last_delivered_on is not null then 'never_engaged'
            else 'not_delivered'
        end as engagement_recency,
        {{ evaluation_date() }} as evaluated_on
    from per_person
)

select * from final

{#-
    Contact engagement score per person the engine reported on: recency-weighted human
    opens (1 point) and clicks (3 points) of the last 365 days, each worth half as much
    every 30 days back (half-life 30 days), mapped to 0-100 by 100 * (1 - exp(-points / 3)).
    An unsubscribe or complaint zeroes it (the person asked not to be emailed).
    No dates: recency is a bucket relative to the evaluation date.
-#}
with

email_events as (
    select
        person_token,
        event_type,
        machine_open,
        {{ evaluation_date() }} - {{ to_utc_date('occurred_at') }} as days_ago
    from {{ ref('fct_email_events') }}
    where
        person_token is not null
        and {{ to_utc_date('occurred_at') }} <= {{ evaluation_date() }}
),

per_person as (
    select
        person_token,
        sum(
            case
                when days_ago > 365 then 0
                when event_type = 'open' and not machine_open then 1.0
                when event_type = 'click' then 3.0
                else 0
            end * power(0.5, days_ago / 30.0)
        ) as points,
        count(*) filter (
            where event_type = 'open' and not machine_open and days_ago < 90
        ) as opens_90d,
        count(*) filter (where event_type = 'click' and days_ago < 90) as clicks_90d,
        count(*) filter (where event_type = 'delivered' and days_ago < 365) as delivered_365d,
        min(days_ago) filter (
            where (event_type = 'open' and not machine_open) or event_type = 'click'
        ) as days_since_engaged,
        bool_or(event_type in ('unsubscribe', 'complaint')) as has_opted_out
    from email_events
    group by person_token
),

scored as (
    select
        *,
        case
            when has_opted_out then 0
            else round((100 * (1 - exp(-points / 3.0)))::numeric, 1)
        end as engagement_score
    from per_person
),

final as (
    select
        person_token::text as person_token,
        engagement_score::numeric as engagement_score,
        (
            case
                when engagement_score >= 60 then 'high'
                when engagement_score >= 25 then 'medium'
                when engagement_score > 0 then 'low'
                else 'none'
            end
        )::text as engagement_tier,
        (
            case
                when days_since_engaged is null then 'never'
                when days_since_engaged < 30 then '0-29d'
                when days_since_engaged < 90 then '30-89d'
                when days_since_engaged < 365 then '90-364d'
                else '365d+'
            end
        )::text as engagement_recency,
        opens_90d::bigint as opens_90d,
        clicks_90d::bigint as clicks_90d,
        delivered_365d::bigint as delivered_365d,
        has_opted_out::boolean as has_opted_out,
        {{ evaluation_date() }}::date as evaluated_on
    from scored
)

select * from final

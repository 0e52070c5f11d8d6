{#-
    When people open and click: human opens and clicks per audience by day of week and hour
    of day (UTC; the hub keeps no recipient time zone). Counts only - no dates - so send-time
    optimisation needs nothing person-level.
-#}
with

email_events as (
    select * from {{ ref('fct_email_events') }}
    where
        (event_type = 'open' and not machine_open)
        or event_type = 'click'
),

bucketed as (
    select
        audience,
        extract(isodow from timezone('UTC', occurred_at))::integer as day_of_week,
        extract(hour from timezone('UTC', occurred_at))::integer as hour_of_day,
        event_type
    from email_events
),

final as (
    select
        audience::text as audience,
        day_of_week::integer as day_of_week,
        hour_of_day::integer as hour_of_day,
        (count(*) filter (where event_type = 'open'))::bigint as opens,
        (count(*) filter (where event_type = 'click'))::bigint as clicks
    from bucketed
    group by audience, day_of_week, hour_of_day
)

select * from final

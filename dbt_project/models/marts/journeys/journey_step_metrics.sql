{#-
    Per journey step: entries, completions, people waiting, drop-off, and for send steps
    sends, opens and clicks (distinct people; human opens only). Steps come from the loaded
    definitions, so a step nobody reached yet shows zeros.
-#}
with

steps as (
    select * from {{ source('journeys', 'steps') }}
),

step_log as (
    select * from {{ source('journeys', 'step_log') }}
),

positions as (
    select * from {{ source('journeys', 'positions') }}
),

sends as (
    select * from {{ source('journeys', 'sends') }}
    where status = 'acked'
),

email_events as (
    select * from {{ ref('fct_email_events') }}
),

entered as (
    select
        journey,
        step,
        count(*) as entries,
        count(completed_at) as completions,
        count(left_at) as drop_off
    from step_log
    group by journey, step
),

waiting as (
    select
        journey,
        step,
        count(*) as currently_at
    from positions
    where status = 'active'
    group by journey, step
),

sent as (
    select
        journey,
        step,
        count(*) as sends
    from sends
    group by journey, step
),

engaged as (
    select
        sends.journey,
        sends.step,
        count(distinct email_events.person_token) filter (
            where email_events.event_type = 'open' and not email_events.machine_open
        ) as opens,
        count(distinct email_events.person_token) filter (
            where email_events.event_type = 'click'
        ) as clicks
    from sends
    inner join email_events
        on
            sends.engine_audience = email_events.audience
            and sends.person_token = email_events.person_token
    group by sends.journey, sends.step
),

final as (
    select
        steps.journey,
        steps.step,
        steps.step_order,
        steps.kind,
        steps.engine_audience,
        coalesce(entered.entries, 0)::bigint as entries,
        coalesce(entered.completions, 0)::bigint as completions,
        coalesce(waiting.currently_at, 0)::bigint as currently_at,
        coalesce(entered.drop_off, 0)::bigint as drop_off,
        coalesce(sent.sends, 0)::bigint as sends,
        coalesce(engaged.opens, 0)::bigint as opens,
        coalesce(engaged.clicks, 0)::bigint as clicks,
        round(engaged.opens::numeric / nullif(sent.sends, 0), 4) as open_rate,
        round(engaged.clicks::numeric / nullif(sent.sends, 0), 4) as click_rate,
        round(entered.drop_off::numeric / nullif(entered.entries, 0), 4) as drop_off_rate
    from steps
    left join entered
        on steps.journey = entered.journey and steps.step = entered.step
    left join waiting
        on steps.journey = waiting.journey and steps.step = waiting.step
    left join sent
        on steps.journey = sent.journey and steps.step = sent.step
    left join engaged
        on steps.journey = engaged.journey and steps.step = engaged.step
)

select * from final

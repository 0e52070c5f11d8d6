{#-
    One row per engine event (deduplicated by event_id: the engine may deliver an event more
    than once; the first received copy wins). Operational grain: occurred_at is the event
    time, not a person's date; analysts who only need rates use agg_engagement_by_audience.
-#}
with

events as (
    select * from {{ ref('stg_engine__events') }}
),

deduplicated as (
    select
        *,
        row_number() over (
            partition by event_id
            order by received_at asc, occurred_at asc
        ) as copy_rank
    from events
),

final as (
    select
        event_id,
        destination,
        audience,
        person_token,
        event_type,
        occurred_at,
        is_machine_open as machine_open,
        bounce_type
    from deduplicated
    where copy_rank = 1
)

select * from final

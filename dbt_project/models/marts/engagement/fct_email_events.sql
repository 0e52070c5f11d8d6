{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook="{{ one_build_at_a_time() }}",
        indexes=[{'columns': ['event_id'], 'unique': true}, {'columns': ['received_at']}],
    )
}}
{#-
    One row per engine event (deduplicated by event_id: the engine may deliver an event more
    than once; the first received copy wins). Operational grain, not analyst tier:
    occurred_at is the event time per person; analysts use the agg_* marts.

    Incremental: events only ever arrive, so a run reads events received since the newest
    received_at already here, minus the look-back (incremental_since), and replaces those
    event ids (delete+insert). Filtering on received_at, not occurred_at, is what handles
    late-arriving events: an open that happened last week but reached the hub today is
    picked up today. Within the window only event ids with a copy not processed yet are
    rebuilt (mark_unprocessed).
-#}
with

events as (
    select * from {{ ref('stg_engine__events') }}
    where {{ incremental_since('received_at') }}
),

marked as (
    {{ mark_unprocessed('events', ['event_id'], 'received_at') }}
),

deduplicated as (
    select distinct on (event_id)
        *,
        bool_or(is_unprocessed) over (partition by event_id) as key_has_unprocessed
    from marked
    order by event_id asc, received_at asc, occurred_at asc
),

final as (
    select
        event_id::text as event_id,
        destination::text as destination,
        audience::text as audience,
        person_token::text as person_token,
        event_type::text as event_type,
        occurred_at::timestamptz as occurred_at,
        coalesce(is_machine_open, false)::boolean as machine_open,
        (case when event_type = 'bounce' then coalesce(bounce_type, 'soft') end)::text
            as bounce_type,
        recipient_domain::text as recipient_domain,
        received_at::timestamptz as received_at
    from deduplicated
    where key_has_unprocessed
)

select * from final

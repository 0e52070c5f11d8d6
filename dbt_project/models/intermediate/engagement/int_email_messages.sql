{#-
    Every email message sent (one row per send to a person for an audience) from the
    engagement history, with what became of it: delivered, bounced, opened by a human,
    clicked, unsubscribed, complained. The behavioral segments read this; the feedback marts
    build the same shape from this run's events (macro email_messages).
-#}
with

events as (
    select * from {{ ref('stg_engine_history__events') }}
),

messages as (
    {{ email_messages('events') }}
)

select * from messages

{#-
    One row per email message (a send to one person for one audience) from this run's
    engine events, with what became of it - the funnel grain. Same logic as the behavioral
    int_email_messages (macro email_messages), but over fct_email_events, so it is current
    after the feedback step. Operational grain, not analyst tier.
-#}
with

events as (
    select
        event_id,
        destination,
        audience,
        person_token,
        event_type,
        occurred_at,
        machine_open as is_machine_open,
        bounce_type,
        recipient_domain,
        received_at
    from {{ ref('fct_email_events') }}
),

messages as (
    {{ email_messages('events') }}
)

select * from messages

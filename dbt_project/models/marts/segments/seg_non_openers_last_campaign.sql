{#-
    Non-openers of the last campaign: people a follow-up ("did you miss this?") goes to.

    A campaign is one audience's send on one UTC day (destination, audience, sent_on). The
    last campaign is the most recent one sent between var non_opener_lookback_days (30) and
    var non_opener_wait_days (3) days before the evaluation date - a message is only
    "unopened" once people had time to open it - ties going to the larger send, then the
    audience name; this segment's own sends are never the campaign it follows up. Members:
    that campaign's delivered messages with no human open and no click (machine opens -
    privacy-proxy prefetches - do not count as opens).

    Reads engagement history (source engine_history), never this run's feedback.
-#}
with

messages as (
    select * from {{ ref('int_email_messages') }}
    where audience is distinct from 'non_openers_last_campaign'
),

campaigns as (
    select
        destination,
        audience,
        sent_on,
        count(*) as messages
    from messages
    where
        sent_on <= {{ evaluation_date() }} - {{ var('non_opener_wait_days', 3) | int }}
        and sent_on >= {{ evaluation_date() }} - {{ var('non_opener_lookback_days', 30) | int }}
    group by destination, audience, sent_on
),

last_campaign as (
    select
        destination,
        audience,
        sent_on
    from campaigns
    order by sent_on desc, messages desc, audience asc, destination asc
    limit 1
),

final as (
    select distinct messages.person_token::text as person_token
    from messages
    inner join last_campaign
        on
            messages.destination = last_campaign.destination
            and messages.audience = last_campaign.audience
            and messages.sent_on = last_campaign.sent_on
    where
        messages.is_delivered
        and not messages.is_opened
)

select * from final

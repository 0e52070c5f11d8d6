{#-
    One digest per person of their consent events, so the send step can tell whose consent
    changed since their last push by comparing one value per member, instead of re-reading
    and hashing every member's events on every run (services/sync.py).

    A count and a sum of 64-bit row hashes: order-independent, so PostgreSQL aggregates by
    hashing, with no sort per person. It only detects change; its inputs are tokens, codes
    and dates, never PHI.

    Built after audience_exclusions (the depends_on below), though it reads only the
    events: dbt hands models to its threads in the order they become ready, and models that
    become ready together shallowest first, then by name. Beside the events it took a thread
    just before the history, the longest chain of the build (events -> history -> state ->
    audiences), which then waited for it; after the consent state it still came before
    audience_membership, the end of that chain. Now it runs beside the audiences' tests. The
    send step, its only reader, follows the audiences anyway.
-#}
-- depends_on: {{ ref('audience_exclusions') }}
select
    person_token,
    count(*)::text || ':' || sum(
        hashtextextended(
            row(event_type, effective_on, purpose, expires_on, source_ref)::text, 0
        )
    )::text as events_digest
from {{ ref('int_consent_events') }}
group by person_token

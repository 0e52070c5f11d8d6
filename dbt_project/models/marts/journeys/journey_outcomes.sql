{#- Per journey: people by status, and by exit reason for those who left early. -#}
with

positions as (
    select * from {{ source('journeys', 'positions') }}
),

final as (
    select
        journey,
        status,
        exit_reason,
        count(*)::bigint as persons
    from positions
    group by journey, status, exit_reason
)

select * from final

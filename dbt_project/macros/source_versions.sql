{#-
    latest_source_versions(sources, token_column, key_column, columns)

    The CTEs shared by the *_deduplicated clinical models (the caller selects from the last
    one, `latest_versions`, where version_rank = 1 and key_has_unprocessed):
    - unioned: the rows of every staging model in `sources` loaded since the incremental
      look-back (incremental_since), with the landing bookkeeping columns, subject_token,
      `token_column` and `columns`;
    - keyed: `key_column`, the source record's key: its token, or the landing row for a row
      without one (it stands alone);
    - marked: is_unprocessed per row (mark_unprocessed);
    - latest_versions: version_rank 1 = the newest version of each source record (by the
      source's own update time, then load order), and whether any of its rows is
      unprocessed.
-#}
{% macro latest_source_versions(sources, token_column, key_column, columns) -%}
unioned as (
    {%- for source in sources %}
    select
        {{ source_record_columns(token_column) }},
        {{ columns | join(',\n        ') }}
    from {{ ref(source) }}
    where {{ incremental_since('loaded_at') }}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

keyed as (
    select
        *,
        coalesce({{ token_column }}, 'row:' || landing_row_id::text) as {{ key_column }}
    from unioned
),

marked as (
    {{ mark_unprocessed('keyed', ['source_system', key_column], 'loaded_at') }}
),

latest_versions as (
    select
        *,
        row_number() over (
            partition by source_system, {{ key_column }}
            order by record_updated_at desc nulls last, loaded_at desc, landing_row_id desc
        ) as version_rank,
        bool_or(is_unprocessed) over (
            partition by source_system, {{ key_column }}
        ) as key_has_unprocessed
    from marked
)
{%- endmacro %}

{#- The columns every source-record row carries from staging: where it landed, when, whose
    it is, and the source record's own token. -#}
{% macro source_record_columns(token_column) -%}
source_system,
        landing_row_id,
        loaded_at,
        record_updated_at,
        subject_token,
        {{ token_column }}
{%- endmacro %}

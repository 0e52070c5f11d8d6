{#-
    source_records(sources, token_column, key_column, columns)

    The CTEs of an incremental clinical model (int_encounters_deduplicated; the caller
    selects from the last one, `marked`, where is_unprocessed):
    - unioned: source_record_union of `sources`, only rows loaded since the incremental
      look-back (incremental_since);
    - keyed: `key_column`, the source record's key: its token, or the landing row for a row
      without one (it stands alone);
    - marked: is_unprocessed per row (mark_unprocessed).

    No ranking of versions: landing already holds one row per source record, the newest
    version (the loader's merge, enforced by the unique index on source + natural key), so
    source_system + key is unique here and the models' own unique index checks it again.
-#}
{% macro source_records(sources, token_column, key_column, columns) -%}
unioned as (
    {{ source_record_union(sources, token_column, columns, incremental_since('loaded_at')) }}
),

keyed as (
    select
        *,
        coalesce({{ token_column }}, 'row:' || landing_row_id::text) as {{ key_column }}
    from unioned
),

marked as (
    {{ mark_unprocessed('keyed', ['source_system', key_column], 'loaded_at') }}
)
{%- endmacro %}

{#-
    source_record_union(sources, token_column, columns, where=none)

    The rows of every staging model in `sources` (names, one per source system), union all:
    the source-record columns, `token_column` and `columns`, optionally only `where`.
    Shared by the clinical record models that read more than one source system.
-#}
{% macro source_record_union(sources, token_column, columns, where=none) -%}
    {%- for source in sources %}
    select
        {{ source_record_columns(token_column) }},
        {{ columns | join(',\n        ') }}
    from {{ ref(source) }}
    {%- if where is not none %}
    where {{ where }}
    {%- endif %}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
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

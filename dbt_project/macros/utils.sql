{#- Small helpers (no dbt packages in this project). -#}

{#- A timestamptz as a calendar date in UTC, whatever the session time zone. -#}
{% macro to_utc_date(column) -%}
    cast(timezone('UTC', {{ column }}) as date)
{%- endmacro %}

{#- The latest non-null value of `column` in a group, by `order_by` (Postgres aggregate). -#}
{% macro latest_non_null(column, order_by) -%}
    (array_agg({{ column }} order by {{ order_by }}) filter (where {{ column }} is not null))[1]
{%- endmacro %}

{#- A SQL string literal for a Jinja value (single quotes doubled); null for none. -#}
{% macro sql_literal(value) -%}
    {%- if value is none -%}
        null
    {%- else -%}
        '{{ value | string | replace("'", "''") }}'
    {%- endif -%}
{%- endmacro %}

{#- Code system URIs and HL7 v2 table-0396 abbreviations -> the hub's short names. -#}
{% macro normalize_code_system(column) -%}
    case lower(trim({{ column }}))
        when 'http://snomed.info/sct' then 'snomed'
        when 'sct' then 'snomed'
        when 'snm' then 'snomed'
        when 'snomedct' then 'snomed'
        when 'snomed-ct' then 'snomed'
        when 'http://loinc.org' then 'loinc'
        when 'ln' then 'loinc'
        when 'http://hl7.org/fhir/sid/cvx' then 'cvx'
        when 'urn:oid:2.16.840.1.113883.12.292' then 'cvx'
        when 'http://www.nlm.nih.gov/research/umls/rxnorm' then 'rxnorm'
        when 'rxn' then 'rxnorm'
        when 'http://hl7.org/fhir/sid/icd-10-cm' then 'icd10'
        when 'http://hl7.org/fhir/sid/icd-10' then 'icd10'
        when 'i10' then 'icd10'
        when 'icd-10' then 'icd10'
        when 'icd10cm' then 'icd10'
        when 'http://www.ama-assn.org/go/cpt' then 'cpt'
        when 'c4' then 'cpt'
        else lower(trim({{ column }}))
    end
{%- endmacro %}

{#- Administrative sex: FHIR codes pass through, HL7 v2 table-0001 letters are mapped. -#}
{% macro normalize_sex(column) -%}
    case upper(trim({{ column }}))
        when 'F' then 'female'
        when 'M' then 'male'
        when 'O' then 'other'
        when 'U' then 'unknown'
        when 'A' then 'other'
        when 'N' then 'unknown'
        else lower(trim({{ column }}))
    end
{%- endmacro %}

{#-
    Age in whole years on `day` from birth year and month (the landing tier keeps no day):
    the birthday counts as reached in its month. Null when the birth year is unknown.
-#}
{% macro age_on(birth_year, birth_month, day) -%}
    (
        extract(year from {{ day }})::integer - {{ birth_year }}
        - case
            when {{ birth_month }} is not null
                and {{ birth_month }} > extract(month from {{ day }})::integer
                then 1
            else 0
        end
    )
{%- endmacro %}

{#- Analyst age bands; ages over 89 collapse into '90+' (HIPAA Safe Harbor). -#}
{% macro age_band(age) -%}
    case
        when {{ age }} is null or {{ age }} < 0 then null
        when {{ age }} < 18 then '0-17'
        when {{ age }} < 35 then '18-34'
        when {{ age }} < 50 then '35-49'
        when {{ age }} < 65 then '50-64'
        when {{ age }} < 75 then '65-74'
        when {{ age }} < 90 then '75-89'
        else '90+'
    end
{%- endmacro %}

{#- Record statuses that mean "this did not happen" (FHIR codes; HL7 RXA-20 RE/NA). -#}
{% macro not_done_statuses() -%}
    ('entered-in-error', 'not-done', 'cancelled', 'canceled', 'stopped', 're', 'na')
{%- endmacro %}

{#-
    Clinical code sets per (code_system, code), from the clinical_code_sets seed:
    select * from ({{ code_sets_by_code() }}) -> code_system, code, code_sets text[].
-#}
{% macro code_sets_by_code() -%}
    select
        code_system,
        code,
        array_agg(distinct code_set order by code_set) as code_sets
    from {{ ref('clinical_code_sets') }}
    group by code_system, code
{%- endmacro %}

{#-
    incremental_since(column)

    The filter of an incremental run: rows whose `column` (when the hub stored them: landing
    loaded_at, engagement received_at) is at or after the newest value already processed,
    minus var('incremental_lookback_hours'). The look-back catches late-arriving rows - a
    load whose transaction began before the last build (so its now() is older than the
    high-water mark) but committed after it. Renders `true` on full builds.
-#}
{% macro incremental_since(column) -%}
    {%- if is_incremental() -%}
        {{ column }} >= (
            select coalesce(max(processed.{{ column }}), '-infinity'::timestamptz)
            from {{ this }} as processed
        ) - interval '{{ var("incremental_lookback_hours", 2) | int }} hours'
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#-
    mark_unprocessed(rows, key_columns, stamp_column)

    The rows of CTE `rows` (already narrowed by incremental_since) with a boolean
    is_unprocessed: true when no row of the same key with the same stamp (loaded_at,
    received_at) is in {{ this }}, i.e. the row was not processed yet. Models rewrite a key
    only when one of its rows in the window is unprocessed (a model that still deduplicates,
    fct_email_events, takes bool_or over the key, sharing the sort of its deduplication
    window, and still chooses among all of the key's rows). Why: the look-back window
    (hours) usually holds much more than the new delivery - a whole load made shortly before
    - and re-deduplicating and re-writing all of it made an incremental run cost a full
    build. A late-arriving row (stamped before the last build, committed after it) has no
    processed twin, so it is still picked up. A left join (one match at most: the table is
    unique on the key), not a correlated `not exists`, so a large table is hashed or merged,
    never scanned per row. All rows are unprocessed on full builds.
-#}
{% macro mark_unprocessed(rows, key_columns, stamp_column) -%}
    select
        {{ rows }}.*,
        {% if is_incremental() -%}
            processed.{{ stamp_column }} is null
        {%- else -%}
            true
        {%- endif %} as is_unprocessed
    from {{ rows }}
    {%- if is_incremental() %}
    left join {{ this }} as processed
        on
            {%- for column in key_columns %}
            processed.{{ column }} = {{ rows }}.{{ column }} and
            {%- endfor %}
            processed.{{ stamp_column }} = {{ rows }}.{{ stamp_column }}
    {%- endif %}
{%- endmacro %}

{#-
    Pre-hook of every model (dbt_project.yml): per-transaction settings for the analytic
    queries dbt runs. PostgreSQL's 4MB default work_mem makes the window functions and hash
    aggregates of the consent and clinical models spill to disk; JIT compilation costs more
    than it saves on queries this size. `set local` ends with the model's transaction.
-#}
{% macro session_tuning() -%}
    {%- set work_mem = var('model_work_mem', '256MB') | string -%}
    {%- if not modules.re.match('^[0-9]+(kB|MB|GB)$', work_mem) -%}
        {{ exceptions.raise_compiler_error("var model_work_mem must look like 256MB, got '" ~ work_mem ~ "'") }}
    {%- endif -%}
    set local work_mem = '{{ work_mem }}';
    set local jit = off;
    -- A build is re-runnable: no need to wait for each model's commit to reach disk (the
    -- data stays consistent; a crash loses at most the last commits, which a re-run redoes).
    set local synchronous_commit = off
{%- endmacro %}

{#-
    Post-hook of every model (dbt_project.yml): `analyze` a table right after it is built.
    A freshly created table has no statistics until autovacuum gets to it, so the models
    built from it next would be planned blind (row counts and distinct values guessed),
    which at scale picks nested loops over hash joins. Renders to nothing for views and
    ephemeral models (dbt skips empty hooks).
-#}
{% macro analyze_built_table() -%}
    {%- if config.get('materialized') in ('table', 'incremental') -%}
        analyze {{ this }}
    {%- endif -%}
{%- endmacro %}

{#-
    code_set_codes(code_set)

    A select of the (code_system, code) pairs of one code set of the clinical_code_sets seed,
    for `(code_system, code) in (...)`.
-#}
{% macro code_set_codes(code_set) -%}
    select code_system, code from {{ ref('clinical_code_sets') }} where code_set = '{{ code_set }}'
{%- endmacro %}

{#-
    one_build_at_a_time(): pre-hook of the incremental models that rewrite rows by key
    (delete+insert). Two builds side by side (the consent fast path beside the hourly run)
    would each delete the rows they rewrite and each insert them again: duplicates. The
    lock lasts until the model's transaction commits (hooks run inside it); the build that
    waited then reads what the first one wrote and finds little left to rewrite.
-#}
{% macro one_build_at_a_time() -%}
    select pg_advisory_xact_lock(hashtext('audience_hub.{{ this.schema }}.{{ this.identifier }}'))
{%- endmacro %}

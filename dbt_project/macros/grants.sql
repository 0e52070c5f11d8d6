{#-
    grant_analyst_access()

    Post-hook of every mart (dbt_project.yml). For models tagged 'analyst' it grants usage on
    the schema and select on the freshly built relation to var('analyst_role') - if that role
    exists (roles are created outside dbt; without it the hook is a no-op, not a failure).
    Renders to nothing for other models: dbt skips empty hooks, and since a rebuilt table
    starts without grants, operational marts (person-level event facts) stay unreadable to
    analysts. The role name is checked against a strict pattern before it reaches SQL.
-#}
{% macro grant_analyst_access() -%}
    {%- if 'analyst' in (model.tags or []) -%}
        {%- set role = var('analyst_role', 'hub_analyst') | string -%}
        {%- if not modules.re.match('^[a-z_][a-z0-9_]*$', role) -%}
            {{ exceptions.raise_compiler_error("var analyst_role must be a plain lower-case role name, got '" ~ role ~ "'") }}
        {%- endif -%}
        do $grant$
        begin
            if exists (select 1 from pg_catalog.pg_roles where rolname = '{{ role }}') then
                -- Models build in parallel: concurrent GRANTs on one schema fail with "tuple
                -- concurrently updated", so grants queue on a lock held until commit.
                perform pg_advisory_xact_lock(hashtext('audience_hub.grant_analyst_access'));
                if not has_schema_privilege('{{ role }}', '{{ this.schema }}', 'USAGE') then
                    execute format('grant usage on schema %I to %I', '{{ this.schema }}', '{{ role }}');
                end if;
                execute format(
                    'grant select on %I.%I to %I', '{{ this.schema }}', '{{ this.identifier }}', '{{ role }}'
                );
            end if;
        end
        $grant$
    {%- endif -%}
{%- endmacro %}

{#-
    The warehouse's change clock (connectors/warehouse/changes.py), for models whose rows a
    sync must notice as changed. A writer stamps its rows with the clock's current epoch and
    holds the clock's shared lock until it commits; a sync advances the clock only when no
    writer holds it, so a row it has not seen always carries an epoch at or after the one
    its next run looks from.

    hold_change_clock(): pre-hook, inside the model's transaction (dbt's default), so the
    lock lasts until the model's commit.
    change_epoch(): the epoch to stamp the model's changed rows with.
-#}
{% macro hold_change_clock() -%}
    select pg_advisory_xact_lock_shared({{ change_lock_class() }}, 0)
{%- endmacro %}

{% macro change_epoch() -%}
    (select epoch from activation.change_clock)
{%- endmacro %}

{#- connectors.warehouse.changes.CHANGE_LOCK (tests/dbt checks that they agree). -#}
{% macro change_lock_class() -%}
    7262007
{%- endmacro %}

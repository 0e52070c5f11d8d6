"""Use cases that combine connectors and domain rules, with no Dagster: shared by the
Dagster assets and the `hub` CLI, and tested directly."""

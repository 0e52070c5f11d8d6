"""Developer and CI tools that are not part of the hub itself (no Dagster imports here)."""

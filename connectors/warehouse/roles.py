"""The hub's database roles and grants (roles.sql), applied at every schema check.

Roles are created when the connecting user may create roles (the embedded server's superuser
can; a managed database's application user usually cannot, and then a DBA creates them once
from roles.sql). Grants are applied whenever the roles exist.
"""

from __future__ import annotations

from importlib import resources

import psycopg

HUB_ROLES = ("hub_owner", "hub_pipeline", "hub_sender", "hub_analyst")
# The analyst tier of marts (must match roles.sql and the dbt 'analyst' tag).
ANALYST_MARTS_PATTERN = (
    r"^(dim_persons|seg_.*|audience_membership|audience_exclusions|segment_catalog|agg_.*)$"
)


def roles_sql() -> str:
    return (resources.files("connectors.warehouse") / "roles.sql").read_text()


def ensure_roles(conn: psycopg.Connection) -> None:
    """Create the NOLOGIN roles if allowed and missing, then apply the grants (idempotent)."""
    conn.execute(roles_sql())


def existing_roles(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("select rolname from pg_roles where rolname = any(%s)", (list(HUB_ROLES),))
    return {name for (name,) in rows}

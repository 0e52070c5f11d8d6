"""The k-anonymity report over the analyst tier (marts.dim_persons)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from domain.kanon import KAnonReport, kanon_report
from domain.privacy_settings import KAnonymitySettings


def dim_persons_kanon(
    conn: psycopg.Connection, settings: KAnonymitySettings | None = None
) -> KAnonReport:
    """Cells of (zip3, birth_year, sex) - or the configured quasi-identifiers - below k."""
    settings = settings or KAnonymitySettings()
    columns = sql.SQL(", ").join(sql.Identifier(q) for q in settings.quasi_identifiers)
    rows = conn.execute(sql.SQL("select {} from marts.dim_persons").format(columns)).fetchall()
    return kanon_report(rows, settings.k, settings.quasi_identifiers, settings.max_suppression)

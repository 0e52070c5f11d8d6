"""Array parameters sent as one PostgreSQL array literal instead of a Python list.

psycopg dumps a list parameter item by item in Python: a dumper call and a quoting regex
per item, about 4 µs an item. A sync sends several arrays of a thousand tokens, hashes and
digests per engine batch, so that was about 3 s of its client time per 100,000 members.
Quoting every item with two `str.replace` calls costs a tenth of that, and PostgreSQL
parses the literal in C. Cast the parameter in SQL: `unnest(%s::text[])`, `%s::date[]`.
"""

from __future__ import annotations

from collections.abc import Iterable


def array_literal(values: Iterable[object]) -> str:
    """`{"a","b",NULL}`: every item quoted (backslash and double quote escaped), None as
    NULL, anything else by its `str()` (a date as YYYY-MM-DD), so any text survives."""
    return (
        "{"
        + ",".join(
            "NULL"
            if value is None
            else '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
            for value in values
        )
        + "}"
    )

"""Rows encoded as one COPY ... FROM STDIN (FORMAT BINARY) payload, away from a connection.

A read worker (read_worker.py) encodes each batch it sends: the loader then hands the
bytes to COPY as they are, where it unpickled the rows and encoded them again in its
writer thread. Pickling a landing row cost 3-5 us (dates and timestamps pickle slowly),
unpickling it 1.3 us, encoding it 0.6-1.3 us (measured on FHIR batches of 50,000 rows):
the worker now encodes once and the loading process does next to nothing per row.

The encoding is psycopg's own (its C row formatter, the one `Copy.write_row` uses), so the
bytes are what the loader's COPY of the same rows would send; a payload carries the binary
COPY signature and trailer, which `Copy.write` passes through as a whole-format block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import adapt, pq
from psycopg._copy_base import BinaryFormatter  # psycopg's COPY encoder, without a cursor
from psycopg.adapt import PyFormat

# By type oid, psycopg dumps bytea through its DB-API `Binary` wrapper's Python dumper; the
# rows hold plain bytes, which its C dumper takes (as loader._copy registers on its cursor).
_ADAPTERS = adapt.AdaptersMap(psycopg.adapters)
_ADAPTERS.register_dumper(bytes, psycopg.adapters.get_dumper(bytes, PyFormat.BINARY))


def binary_copy_payload(rows: Sequence[Sequence[Any]], types: Sequence[int]) -> bytes:
    """The whole binary COPY stream of `rows`, whose columns have the type oids `types`."""
    transformer = adapt.Transformer(_ADAPTERS)
    transformer.set_dumper_types(types, pq.Format.BINARY)
    formatter = BinaryFormatter(transformer)
    payload = bytearray()
    for row in rows:
        payload += formatter.write_row(row)
    payload += formatter.end()
    return bytes(payload)

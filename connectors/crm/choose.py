"""Pick the shipped column mapping that fits a CRM export, from its column names alone."""

from __future__ import annotations

import orjson
import pyarrow.parquet as pq

from connectors.crm.mapping import MAPPINGS_DIR, CrmMapping, MappingError, builtin_mapping
from connectors.crm.raw import _csv_header, resolve_format
from connectors.sources import local_path, open_binary


def builtin_mapping_names() -> list[str]:
    return sorted(path.stem for path in MAPPINGS_DIR.glob("*.yaml"))


def column_names(uri: str, mapping: CrmMapping) -> list[str]:
    """The export's column names: CSV header, first JSONL object's keys, Parquet schema."""
    kind = resolve_format(uri, mapping)
    if kind == "parquet":
        path = local_path(uri)
        with open_binary(uri) if path is None else open(path, "rb") as handle:
            return list(pq.ParquetFile(handle).schema_arrow.names)
    if kind == "jsonl":
        with open_binary(uri) as handle:
            for line in handle:
                if line.strip():
                    try:
                        first = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        return []
                    return list(first) if isinstance(first, dict) else []
        return []
    return _csv_header(uri, mapping) or []


def choose_mapping(uri: str) -> CrmMapping:
    """The shipped mapping whose key column is present and whose columns cover the export best.

    Raises MappingError (naming the file, not its contents) when none has its key column.
    """
    best: tuple[float, CrmMapping] | None = None
    for name in builtin_mapping_names():
        mapping = builtin_mapping(name)
        names = set(column_names(uri, mapping))
        if mapping.key not in names:
            continue
        coverage = len(names & set(mapping.columns)) / max(len(mapping.columns), 1)
        if best is None or coverage > best[0]:
            best = (coverage, mapping)
    if best is None:
        raise MappingError(
            f"{uri.rsplit('/', 1)[-1]}: no shipped CRM mapping fits its columns;"
            " add one under connectors/crm/mappings/"
        )
    return best[1]

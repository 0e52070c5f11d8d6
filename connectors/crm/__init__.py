"""CRM/CDP connector: mapped CSV, JSONL and Parquet exports -> contact records."""

from connectors.crm.choose import builtin_mapping_names, choose_mapping
from connectors.crm.convert import ROW_COLUMN, CrmBatch
from connectors.crm.mapping import (
    ColumnSpec,
    CrmMapping,
    MappingError,
    builtin_mapping,
    load_mapping,
)
from connectors.crm.raw import CrmSchemaError
from connectors.crm.reader import read_crm, read_crm_frames, unmapped_columns

__all__ = [
    "ROW_COLUMN",
    "ColumnSpec",
    "CrmBatch",
    "CrmMapping",
    "CrmSchemaError",
    "MappingError",
    "builtin_mapping",
    "builtin_mapping_names",
    "choose_mapping",
    "load_mapping",
    "read_crm",
    "read_crm_frames",
    "unmapped_columns",
]

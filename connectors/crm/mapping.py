"""CRM/CDP column mappings: which source column becomes which canonical contact field.

A mapping is YAML, validated by `CrmMapping`. Only listed columns are read into records
(default deny); everything else in the file is dropped and only counted. Mapping files are
configuration, not records, so errors may quote them freely.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

MAPPINGS_DIR = Path(__file__).parent / "mappings"

# Canonical contact fields (docs/data-contracts.md). subject_system is always 'crm'.
CONTACT_FIELDS = frozenset(
    (
        "subject_id",
        "email",
        "given_name",
        "family_name",
        "phone",
        "birth_date",
        "postal_code",
        "mrn",
        "mrn_authority",
        "email_opt_in",
        "marketing_auth_signed",
        "marketing_auth_expires",
        "marketing_auth_revoked",
        "unsubscribed_at",
        "notes",
        "effective_at",
    )
)

ColumnType = Literal["str", "date", "datetime", "bool", "email"]


class MappingError(ValueError):
    """A mapping file cannot be read or does not validate; the message names file and key."""


class ColumnSpec(BaseModel):
    """How one source column maps: canonical field, type, and a strptime format for dates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    type: ColumnType = "str"
    # A polars/chrono strptime format (%Y-%m-%d, %d/%m/%Y, %Y-%m-%dT%H:%M:%S%z...). None:
    # ISO dates, or for datetimes any of the common ISO 8601 shapes.
    format: str | None = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value not in CONTACT_FIELDS:
            raise ValueError(f"{value!r} is not a canonical contact field")
        return value

    @model_validator(mode="after")
    def _format_only_for_dates(self) -> ColumnSpec:
        if self.format is not None and self.type not in ("date", "datetime"):
            raise ValueError("format is only allowed for date and datetime columns")
        return self


class CrmMapping(BaseModel):
    """A CRM export's layout and its column-to-field map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    format: Literal["csv", "jsonl", "parquet", "auto"] = "auto"
    delimiter: str = ","
    quote_char: str = '"'
    encoding: str = "utf-8"
    key: str  # the source column holding the contact id; it must map to subject_id
    columns: dict[str, ColumnSpec]

    @field_validator("delimiter", "quote_char")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1 or value in "\r\n":
            raise ValueError("must be a single character other than a line break")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CrmMapping:
        if self.key not in self.columns:
            raise ValueError(f"key column {self.key!r} is not listed under columns")
        if self.columns[self.key].field != "subject_id":
            raise ValueError(f"key column {self.key!r} must map to field subject_id")
        seen: dict[str, str] = {}
        for source, spec in self.columns.items():
            if spec.field in seen:
                raise ValueError(
                    f"columns {seen[spec.field]!r} and {source!r} both map to {spec.field!r}"
                )
            seen[spec.field] = source
        return self


def load_mapping(path: str | Path) -> CrmMapping:
    """Load and validate a mapping YAML; MappingError names the file and the failing key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read mapping ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise MappingError(f"{path}: invalid YAML{where}") from None
    if not isinstance(data, dict):
        raise MappingError(f"{path}: the top level must be a mapping of keys")
    try:
        return CrmMapping.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{key}: {err['msg']}")
        raise MappingError(f"{path}: " + "; ".join(problems)) from None


def builtin_mapping(name: str) -> CrmMapping:
    """One of the mappings shipped in connectors/crm/mappings/ (e.g. 'contacts')."""
    return load_mapping(MAPPINGS_DIR / f"{name}.yaml")

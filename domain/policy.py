"""The field policy: loaded from YAML, validated, compiled into landing columns per entity.

The policy is data reviewed like code (`domain/field_policy.yaml`); the landing tables are
derived from it, so a field can only reach landing if the policy says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError, field_validator, model_validator

# keep:<type> -> the landing column's SQL type. code, unit and uri are text columns whose
# values must also fit a shape (domain.protect.KEEP_SHAPES): a code-shaped field cannot carry
# a name, address or note typed into it by a source system; one that does not fit is nulled.
KEEP_TYPES: dict[str, str] = {
    "text": "text",
    "code": "text",
    "unit": "text",
    "uri": "text",
    "date": "date",
    "timestamptz": "timestamptz",
    "boolean": "boolean",
    "float8": "float8",
}
# generalization rule -> (landing column template, SQL type)
GENERALIZE_RULES = {
    "birth_year": ("birth_year", "integer"),
    "birth_month": ("birth_month", "integer"),
    "zip3": ("zip3", "text"),
    "has_value": ("has_{field}", "boolean"),
}
SIMPLE_ACTIONS = {"subject", "tokenize", "tokenize_subject", "vault", "drop"}
IDENTITY_KEY_TYPES = {"mrn", "email", "name_dob"}
# A vault field's columns of vault.contacts besides its ciphertext's (<field>): its key
# version's and its effective time's (connectors/warehouse/vault_table.py).
KEY_VERSION_SUFFIX, EFFECTIVE_AT_SUFFIX = "_key_version", "_effective_at"
# Entity, field and landing column names are formatted into DDL and COPY statements
# (connectors/warehouse), so they must be plain lower-case SQL identifiers: no quoting, no
# reserved characters, and at most 63 bytes, PostgreSQL's limit (longer ones are truncated
# silently, which could merge two columns).
SQL_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Entity names become parts of table names (landing.<entity>s, incoming_<entity> in
# connectors/warehouse/loader.py), so they leave room for those affixes.
ENTITY_NAME_MAX = 48


class PolicyError(Exception):
    """The policy file is invalid; the message names the file and the key."""


def _check_identifier(kind: str, name: object, max_length: int = 63) -> None:
    """Refuse a name that is not a plain SQL identifier (it would be formatted into SQL)."""
    if not isinstance(name, str) or not SQL_IDENTIFIER.fullmatch(name) or len(name) > max_length:
        raise ValueError(
            f"{kind} name {name!r} is not a plain SQL identifier (lower-case letters, digits"
            f" and _, not starting with a digit, at most {max_length} characters)"
        )


def _check_action(action: str) -> str:
    if action in SIMPLE_ACTIONS:
        return action
    kind, _, argument = action.partition(":")
    if kind == "keep" and argument in KEEP_TYPES:
        return action
    if kind == "generalize" and argument in GENERALIZE_RULES:
        return action
    raise ValueError(f"unknown action {action!r}")


class EntityPolicy(BaseModel):
    natural_key: list[str] = []
    identity_keys: list[str] = []
    fields: dict[str, list[str]]

    @field_validator("fields", mode="before")
    @classmethod
    def _listify(cls, value: dict) -> dict:
        return {name: [a] if isinstance(a, str) else list(a) for name, a in value.items()}

    @field_validator("fields")
    @classmethod
    def _valid_actions(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name in value:
            _check_identifier("field", name)
        for actions in value.values():
            for action in actions:
                _check_action(action)
        return value

    @field_validator("identity_keys")
    @classmethod
    def _valid_keys(cls, value: list[str]) -> list[str]:
        unknown = set(value) - IDENTITY_KEY_TYPES
        if unknown:
            raise ValueError(f"unknown identity key types {sorted(unknown)}")
        return value


class FieldPolicy(BaseModel):
    version: int
    mrn_authorities: dict[str, str] = {}
    entities: dict[str, EntityPolicy]

    @field_validator("entities")
    @classmethod
    def _valid_entity_names(cls, value: dict[str, EntityPolicy]) -> dict[str, EntityPolicy]:
        for name in value:
            _check_identifier("entity", name, ENTITY_NAME_MAX)
        return value

    @model_validator(mode="after")
    def _natural_keys_are_landing_columns(self) -> FieldPolicy:
        for name, entity in self.entities.items():
            for column in landing_columns(entity):  # derived names, e.g. <field>_token
                _check_identifier(f"entities.{name} landing column", column.name)
            columns = {c.name for c in landing_columns(entity)}
            missing = [k for k in entity.natural_key if k not in columns]
            if missing:
                raise ValueError(f"entities.{name}.natural_key: {missing} are not landing columns")
        # A vault field names three columns of vault.contacts: <field>, <field>_key_version
        # and <field>_effective_at; they must be identifiers, and distinct from another
        # field's (a field called email_key_version beside email would share one).
        names = vault_fields(self)
        suffixes = (KEY_VERSION_SUFFIX, EFFECTIVE_AT_SUFFIX)
        derived = [field + suffix for field in names for suffix in suffixes]
        for column in derived:
            _check_identifier("vault column", column)
        clashes = sorted(set(names) & set(derived))
        if clashes:
            raise ValueError(f"vault fields {clashes} clash with another vault field's columns")
        return self


@dataclass(frozen=True, slots=True)
class LandingColumn:
    name: str
    sql_type: str


def landing_columns(entity: EntityPolicy) -> list[LandingColumn]:
    """The landing table's data columns for an entity, in policy order."""
    columns = [LandingColumn("subject_token", "text")]
    for field, actions in entity.fields.items():
        for action in actions:
            kind, _, argument = action.partition(":")
            if action == "tokenize":
                columns.append(LandingColumn(f"{field}_token", "text"))
            elif action == "tokenize_subject":
                columns.append(LandingColumn(field.replace("_id", "_token"), "text"))
            elif kind == "keep":
                columns.append(LandingColumn(field, KEEP_TYPES[argument]))
            elif kind == "generalize":
                template, sql_type = GENERALIZE_RULES[argument]
                columns.append(LandingColumn(template.format(field=field), sql_type))
    return columns


def vault_fields(policy: FieldPolicy) -> list[str]:
    """The fields any entity seals into the vault, in policy order: each is a group of
    columns of vault.contacts (connectors/warehouse/vault_table.py)."""
    fields: dict[str, None] = {}
    for entity in policy.entities.values():
        for name, actions in entity.fields.items():
            if "vault" in actions:
                fields[name] = None
    return list(fields)


def load_policy(path: Path | None = None) -> FieldPolicy:
    """Load and validate a policy file (the packaged default when no path is given)."""
    if path is None:
        text = (resources.files("domain") / "field_policy.yaml").read_text()
        name = "domain/field_policy.yaml"
    else:
        text, name = Path(path).read_text(), str(path)
    try:
        return FieldPolicy.model_validate(yaml.safe_load(text))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in error.errors()
        )
        raise PolicyError(f"{name}: {problems}") from None


@cache
def default_policy() -> FieldPolicy:
    return load_policy()

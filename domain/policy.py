"""The field policy: loaded from YAML, validated, compiled into landing columns per entity.

The policy is data reviewed like code (`domain/field_policy.yaml`); the landing tables are
derived from it, so a field can only reach landing if the policy says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError, field_validator, model_validator

KEEP_TYPES = {"text", "date", "timestamptz", "boolean", "float8"}
# generalization rule -> (landing column template, SQL type)
GENERALIZE_RULES = {
    "birth_year": ("birth_year", "integer"),
    "birth_month": ("birth_month", "integer"),
    "zip3": ("zip3", "text"),
    "has_value": ("has_{field}", "boolean"),
}
SIMPLE_ACTIONS = {"subject", "tokenize", "tokenize_subject", "vault", "drop"}
IDENTITY_KEY_TYPES = {"mrn", "email", "name_dob"}


class PolicyError(Exception):
    """The policy file is invalid; the message names the file and the key."""


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

    @model_validator(mode="after")
    def _natural_keys_are_landing_columns(self) -> FieldPolicy:
        for name, entity in self.entities.items():
            columns = {c.name for c in landing_columns(entity)}
            missing = [k for k in entity.natural_key if k not in columns]
            if missing:
                raise ValueError(f"entities.{name}.natural_key: {missing} are not landing columns")
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
                columns.append(LandingColumn(field, argument))
            elif kind == "generalize":
                template, sql_type = GENERALIZE_RULES[argument]
                columns.append(LandingColumn(template.format(field=field), sql_type))
    return columns


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
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise PolicyError(f"{name}: {problems}") from None


@cache
def default_policy() -> FieldPolicy:
    return load_policy()

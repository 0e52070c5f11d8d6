"""Privacy settings as data: retention periods and the k-anonymity threshold (YAML, validated).

The packaged `domain/privacy_settings.yaml` is the default; HUB_PRIVACY_SETTINGS names another
file. Errors name the file and the key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from domain.kanon import HIERARCHIES

AUDIT_MIN_YEARS = 6


class PrivacySettingsError(Exception):
    """The settings file is invalid; the message names the file and the key."""


class RetentionSettings(BaseModel):
    audit_years: int = AUDIT_MIN_YEARS
    engagement_events_days: int = Field(730, ge=1)
    quarantine_payload_days: int = Field(90, ge=1)
    sync_changelog_days: int = Field(2192, ge=1)

    @field_validator("audit_years")
    @classmethod
    def _at_least_six_years(cls, value: int) -> int:
        if value < AUDIT_MIN_YEARS:
            raise ValueError(f"audit records are kept at least {AUDIT_MIN_YEARS} years")
        return value


class KAnonymitySettings(BaseModel):
    k: int = Field(11, ge=2)
    quasi_identifiers: list[str] = ["zip3", "birth_year", "sex"]
    max_suppression: float = Field(0.01, ge=0, le=1)

    @field_validator("quasi_identifiers")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [q for q in value if q not in HIERARCHIES]
        if unknown:
            raise ValueError(f"no generalization hierarchy for {unknown}")
        return value


class PrivacySettings(BaseModel):
    retention: RetentionSettings = RetentionSettings()
    k_anonymity: KAnonymitySettings = KAnonymitySettings()


def load_privacy_settings(path: Path | None = None) -> PrivacySettings:
    if path is None:
        text = (resources.files("domain") / "privacy_settings.yaml").read_text()
        name = "domain/privacy_settings.yaml"
    else:
        text, name = Path(path).read_text(), str(path)
    try:
        return PrivacySettings.model_validate(yaml.safe_load(text) or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise PrivacySettingsError(f"{name}: {problems}") from None

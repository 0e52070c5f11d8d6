"""Turn a parsed source record into protected rows: landing (no PHI), vault, identity keys.

This is the one place PHI is handled on the way in. Every field goes through the policy's
actions; a field the policy does not name is dropped and counted (default deny).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from domain.normalize import normalize_email, normalize_identifier, normalize_name
from domain.policy import EntityPolicy, FieldPolicy, landing_columns
from domain.records import SourceRecord
from domain.safe_harbor import zip3
from domain.tokens import Tokenizer
from domain.vault_cipher import VaultCipher


@dataclass(slots=True)
class ProtectedRecord:
    entity: str
    subject_token: str
    landing: dict[str, Any]
    vault: list[tuple[str, int, bytes]]  # (column, key version, nonce||ciphertext)
    identity_keys: list[tuple[str, str]]  # (key type, key hash)


@dataclass
class Protector:
    policy: FieldPolicy
    tokenizer: Tokenizer
    cipher: VaultCipher
    unknown_fields: Counter = field(default_factory=Counter)  # field names only, never values

    def __post_init__(self) -> None:
        self._columns = {
            name: [c.name for c in landing_columns(entity)]
            for name, entity in self.policy.entities.items()
        }

    def columns(self, entity: str) -> list[str]:
        return self._columns[entity]

    def protect(self, record: SourceRecord) -> ProtectedRecord:
        entity_policy = self.policy.entities[record.entity]
        values = record.fields
        subject_system = values.get("subject_system")
        subject_token = self.tokenizer.subject_token(subject_system, values["subject_id"])
        landing: dict[str, Any] = {"subject_token": subject_token}
        vault: list[tuple[str, int, bytes]] = []
        for name, value in values.items():
            actions = entity_policy.fields.get(name)
            if actions is None:
                self.unknown_fields[f"{record.entity}.{name}"] += 1
                continue
            for action in actions:
                self._apply(action, name, value, subject_system, subject_token, landing, vault)
        identity = self._identity_keys(entity_policy, values) if entity_policy.identity_keys else []
        return ProtectedRecord(record.entity, subject_token, landing, vault, identity)

    def _apply(
        self,
        action: str,
        name: str,
        value: Any,
        subject_system: str,
        subject_token: str,
        landing: dict[str, Any],
        vault: list[tuple[str, int, bytes]],
    ) -> None:
        if action in ("subject", "drop"):
            return
        if action == "tokenize":
            landing[f"{name}_token"] = (
                None if value is None else self.tokenizer.token(name, str(value))
            )
        elif action == "tokenize_subject":
            landing[name.replace("_id", "_token")] = (
                None if value is None else self.tokenizer.subject_token(subject_system, value)
            )
        elif action == "vault":
            if value is not None and value != "":
                text = value.isoformat() if isinstance(value, date) else str(value)
                version, blob = self.cipher.encrypt(subject_token, name, text)
                vault.append((name, version, blob))
        elif action.startswith("keep:"):
            landing[name] = value
        else:
            rule = action.partition(":")[2]
            if rule == "birth_year":
                landing["birth_year"] = value.year if isinstance(value, date) else None
            elif rule == "birth_month":
                landing["birth_month"] = value.month if isinstance(value, date) else None
            elif rule == "zip3":
                landing["zip3"] = zip3(value)
            elif rule == "has_value":
                landing[f"has_{name}"] = value is not None and value != ""

    def _identity_keys(self, policy: EntityPolicy, values: dict[str, Any]) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        token = self.tokenizer.token
        if "mrn" in policy.identity_keys:
            mrn = normalize_identifier(values.get("mrn"))
            if mrn:
                authority = values.get("mrn_authority") or ""
                authority = self.policy.mrn_authorities.get(authority, authority)
                keys.append(("mrn", token("id:mrn", f"{normalize_identifier(authority)}|{mrn}")))
        if "email" in policy.identity_keys:
            email = normalize_email(values.get("email"))
            if email:
                keys.append(("email", token("id:email", email)))
        if "name_dob" in policy.identity_keys:
            family = normalize_name(values.get("family_name"))
            given = normalize_name(values.get("given_name"))
            birth = values.get("birth_date")
            if family and given and isinstance(birth, date):
                keys.append(("name_dob", token("id:name_dob", f"{family}|{given}|{birth}")))
        return keys

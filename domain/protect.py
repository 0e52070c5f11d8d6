"""Turn a parsed source record into protected rows: landing (no PHI), vault, identity keys.

This is the one place PHI is handled on the way in. Every field goes through the policy's
actions; a field the policy does not name is dropped and counted (default deny).

Speed: this runs once per record on ingest, so the field policy is compiled once per entity
into, per field, either "copy as is" (keep) or a tuple of small bound functions, and tokens
come from per-namespace keyed HMAC states (`Tokenizer.namespace`). Subject tokens, which
repeat across a person's records, are memoized per run. What is computed is unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from domain.normalize import normalize_email, normalize_identifier, normalize_name
from domain.policy import EntityPolicy, FieldPolicy, landing_columns
from domain.records import SourceRecord
from domain.safe_harbor import zip3
from domain.tokens import Tokenizer
from domain.vault_cipher import VaultCipher

Vault = list[tuple[str, int, bytes]]  # (column, key version, nonce||ciphertext)
# One compiled action: (value, subject_system, subject_token, landing, vault) -> None.
Step = Callable[[Any, Any, str, dict[str, Any], Vault], None]
KEEP: None = None  # plan marker: the field is copied into landing as is (the common case)
SUBJECT_CACHE_SIZE = 1 << 16  # memoized subject tokens per subject system, cleared when full


@dataclass(slots=True)
class ProtectedRecord:
    entity: str
    subject_token: str
    landing: dict[str, Any]
    vault: Vault
    identity_keys: list[tuple[str, str]]  # (key type, key hash)


@dataclass(slots=True)
class _EntityPlan:
    """An entity's policy compiled for one tokenizer and cipher (see Protector._compile)."""

    steps: dict[str, tuple[Step, ...] | None]  # field -> steps, or KEEP
    identity: Callable[[dict[str, Any]], list[tuple[str, str]]] | None


@dataclass
class Protector:
    """Protects records under `policy` with `tokenizer` and `cipher`.

    The compiled plans capture the tokenizer and the cipher: replace them by building a new
    Protector, not by assigning the attributes.
    """

    policy: FieldPolicy
    tokenizer: Tokenizer
    cipher: VaultCipher
    unknown_fields: Counter = field(default_factory=Counter)  # field names only, never values

    def __post_init__(self) -> None:
        self._columns = {
            name: [c.name for c in landing_columns(entity)]
            for name, entity in self.policy.entities.items()
        }
        self._plans: dict[str, _EntityPlan] = {}
        # subject system -> (subject id -> token, the namespace's token function). The ids
        # are PHI-adjacent: this lives in memory for the Protector's lifetime only.
        self._subjects: dict[Any, tuple[dict[Any, str], Callable[[str], str]]] = {}

    def columns(self, entity: str) -> list[str]:
        return self._columns[entity]

    def protect(self, record: SourceRecord) -> ProtectedRecord:
        plan = self._plans.get(record.entity) or self._compile(record.entity)
        values = record.fields
        subject_system = values.get("subject_system")
        subject_token = self._subject_token(subject_system, values["subject_id"])
        landing: dict[str, Any] = {"subject_token": subject_token}
        vault: Vault = []
        steps = plan.steps
        for name, value in values.items():
            actions = steps.get(name, ())
            if actions is KEEP:
                landing[name] = value
            elif actions:
                for step in actions:
                    step(value, subject_system, subject_token, landing, vault)
            elif name not in steps:
                self.unknown_fields[f"{record.entity}.{name}"] += 1
        identity = plan.identity(values) if plan.identity is not None else []
        return ProtectedRecord(record.entity, subject_token, landing, vault, identity)

    # subject tokens

    def _subject_token(self, subject_system: Any, subject_id: Any) -> str:
        """tokenizer.subject_token(system, id), memoized: a person's records share it."""
        entry = self._subjects.get(subject_system)
        if entry is None:
            entry = ({}, self._namespace(f"subject:{subject_system}"))
            self._subjects[subject_system] = entry
        cache, make = entry
        if type(subject_id) is not str:  # 1, 1.0 and True are equal keys but distinct tokens
            return make(subject_id)
        token = cache.get(subject_id)
        if token is None:
            if len(cache) >= SUBJECT_CACHE_SIZE:
                cache.clear()  # bounded memory; recomputing is correct, only slower
            token = cache[subject_id] = make(subject_id)
        return token

    def _namespace(self, kind: str) -> Callable[[str], str]:
        """The tokenizer's fast per-namespace function (or a plain wrapper for other tokenizers)."""
        namespace = getattr(self.tokenizer, "namespace", None)
        if namespace is not None:
            return namespace(kind)
        token = self.tokenizer.token
        return lambda value: token(kind, value)

    # compiling the policy

    def _compile(self, entity: str) -> _EntityPlan:
        policy = self.policy.entities[entity]  # KeyError for an entity the policy lacks
        steps: dict[str, tuple[Step, ...] | None] = {}
        for name, actions in policy.fields.items():
            if len(actions) == 1 and actions[0].startswith("keep:"):
                steps[name] = KEEP
            else:
                steps[name] = tuple(s for a in actions if (s := self._step(a, name)) is not None)
        identity = self._identity_function(policy) if policy.identity_keys else None
        plan = self._plans[entity] = _EntityPlan(steps, identity)
        return plan

    def _step(self, action: str, name: str) -> Step | None:
        """The function applying one validated policy action to field `name` (None: nothing)."""
        if action in ("subject", "drop"):
            return None
        if action == "tokenize":
            column, token = f"{name}_token", self._namespace(name)

            def tokenize(value: Any, system: Any, subject: str, landing: dict, vlt: Vault) -> None:
                landing[column] = None if value is None else token(str(value))

            return tokenize
        if action == "tokenize_subject":
            column, subject_token = name.replace("_id", "_token"), self._subject_token

            def tokenize_subject(
                value: Any, system: Any, subject: str, landing: dict, vault: Vault
            ) -> None:
                landing[column] = None if value is None else subject_token(system, value)

            return tokenize_subject
        if action == "vault":
            encrypt = self.cipher.encrypt

            def seal(value: Any, system: Any, subject: str, landing: dict, vault: Vault) -> None:
                if value is not None and value != "":
                    text = value.isoformat() if isinstance(value, date) else str(value)
                    version, blob = encrypt(subject, name, text)
                    vault.append((name, version, blob))

            return seal
        if action.startswith("keep:"):

            def keep(value: Any, system: Any, subject: str, landing: dict, vault: Vault) -> None:
                landing[name] = value

            return keep
        return _GENERALIZE[action.partition(":")[2]](name)

    def _identity_function(
        self, policy: EntityPolicy
    ) -> Callable[[dict[str, Any]], list[tuple[str, str]]]:
        wanted = set(policy.identity_keys)
        authorities = self.policy.mrn_authorities
        mrn_token = self._namespace("id:mrn") if "mrn" in wanted else None
        email_token = self._namespace("id:email") if "email" in wanted else None
        name_dob_token = self._namespace("id:name_dob") if "name_dob" in wanted else None

        def identity_keys(values: dict[str, Any]) -> list[tuple[str, str]]:
            keys: list[tuple[str, str]] = []
            if mrn_token is not None:
                mrn = normalize_identifier(values.get("mrn"))
                if mrn:
                    authority = values.get("mrn_authority") or ""
                    authority = authorities.get(authority, authority)
                    keys.append(("mrn", mrn_token(f"{normalize_identifier(authority)}|{mrn}")))
            if email_token is not None:
                email = normalize_email(values.get("email"))
                if email:
                    keys.append(("email", email_token(email)))
            if name_dob_token is not None:
                family = normalize_name(values.get("family_name"))
                given = normalize_name(values.get("given_name"))
                birth = values.get("birth_date")
                if family and given and isinstance(birth, date):
                    keys.append(("name_dob", name_dob_token(f"{family}|{given}|{birth}")))
            return keys

        return identity_keys


def _birth_year(name: str) -> Step:
    def birth_year(value: Any, system: Any, subject: str, landing: dict, vault: Vault) -> None:
        landing["birth_year"] = value.year if isinstance(value, date) else None

    return birth_year


def _birth_month(name: str) -> Step:
    def birth_month(value: Any, system: Any, subject: str, landing: dict, vault: Vault) -> None:
        landing["birth_month"] = value.month if isinstance(value, date) else None

    return birth_month


def _zip3(name: str) -> Step:
    def to_zip3(value: Any, system: Any, subject: str, landing: dict, vault: Vault) -> None:
        landing["zip3"] = zip3(value)

    return to_zip3


def _has_value(name: str) -> Step:
    column = f"has_{name}"

    def has_value(value: Any, system: Any, subject: str, landing: dict, vault: Vault) -> None:
        landing[column] = value is not None and value != ""

    return has_value


# generalize:<rule> -> the step factory (rules validated by domain.policy.GENERALIZE_RULES)
_GENERALIZE: dict[str, Callable[[str], Step]] = {
    "birth_year": _birth_year,
    "birth_month": _birth_month,
    "zip3": _zip3,
    "has_value": _has_value,
}

"""Turn a parsed source record into protected rows: landing (no PHI), vault, identity keys.

This is the one place PHI is handled on the way in. Every field goes through the policy's
actions; a field the policy does not name is dropped and counted (default deny).

Speed: this runs once per record on ingest, so the field policy is compiled once per entity
into, per field, either "copy as is" (keep) or a tuple of small bound functions, and tokens
come from per-namespace keyed HMAC states (`Tokenizer.namespace`). Subject tokens, which
repeat across a person's records, are memoized per run. What is computed is unchanged.

Kept free text is guarded (docs/reliability.md): a source system can type a name, email,
phone or date into a field the policy keeps (state, language, race text, a code's display).
Each text/code/unit/uri value must fit its shape (KEEP_SHAPES) and hold no DLP pattern
(domain.dlp.PATTERNS); in records that carry direct identifiers (patient, contact) it must
also not contain the record's own name, email, phone, street or SSN/MRN. A value failing
any rule is nulled and counted in Protector.dropped[(entity, field, reason)] (names only).
Cost: values that passed the pattern rules are remembered per field (codes, statuses and
displays repeat), so the common case is one set lookup; the own-identifier rule runs only
for records with identifiers in them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from domain.dlp import MIN_EXACT_LENGTH, fold
from domain.kept_guard import (
    ACCEPTED_CACHE_SIZE,
    DIGITS_ONLY,
    KEEP_SHAPES,
    NOTHING_TO_MATCH,
    OWN_IDENTIFIERS,
    PRECHECK_IDENTIFIERS,
    VOCABULARY,
    FieldGuard,
    RowGuard,
    contains_whole,
    get_or_none,
    getter_of,
    row_text,
)
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
    guard: RowGuard | None  # the guarded keep fields, if any
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
    # (entity, field, reason) -> kept values nulled by the guard; reason: not_code, dlp:<kind>
    # or own_identifier. Names only, never values.
    dropped: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._columns = {
            name: [c.name for c in landing_columns(entity)]
            for name, entity in self.policy.entities.items()
        }
        self._plans: dict[str, _EntityPlan] = {}
        # subject system -> (subject id -> token, the namespace's token function). The ids
        # are PHI-adjacent: this lives in memory for the Protector's lifetime only.
        self._subjects: dict[Any, tuple[dict[Any, str], Callable[[str], str]]] = {}

    # Pickled only to hand it to a loader's read worker process (connectors/warehouse/
    # read_worker.py): the policy, tokenizer and cipher travel; the compiled plans and memos
    # are rebuilt there, and the counters start empty (the worker sends its own back).
    def __getstate__(self) -> dict:
        return {"policy": self.policy, "tokenizer": self.tokenizer, "cipher": self.cipher}

    def __setstate__(self, state: dict) -> None:
        self.policy, self.tokenizer, self.cipher = (
            state["policy"], state["tokenizer"], state["cipher"]
        )  # fmt: skip
        self.unknown_fields, self.dropped = Counter(), Counter()
        self.__post_init__()

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
        guard = plan.guard
        if guard is not None:
            try:
                row = guard.getter(landing)  # in C
            except KeyError:  # a guarded field absent from this source's records
                guard.getter = get_or_none(guard.names)
                row = guard.getter(landing)
            try:
                seen = guard.clean_rows.get(row)  # the common case: a known clean row
            except TypeError:  # an unhashable value
                seen = None
            if seen is None:
                seen = self._check_row(record.entity, guard, landing, row)
            if seen is not NOTHING_TO_MATCH:
                self._drop_own_identifiers(record.entity, guard, seen, values, landing)
        identity = plan.identity(values) if plan.identity is not None else []
        return ProtectedRecord(record.entity, subject_token, landing, vault, identity)

    # the guard of kept text

    def _check_row(
        self, entity: str, guard: RowGuard, landing: dict[str, Any], row: tuple[Any, ...]
    ) -> tuple[str, bool]:
        """Apply the field guards to a record's guarded values (nulling and counting what
        fails) and return what the own-identifier rule needs of them (row_text); remember
        it for the row when all values were clean."""
        clean = True
        for name, field_guard in zip(guard.names, guard.guards, strict=True):
            value = landing.get(name)
            if value is None or (value.__class__ is str and value in field_guard):
                continue
            if self._guarded(entity, name, field_guard, value) is None:
                landing[name] = None
                clean = False
        if not clean:
            row = tuple(landing.get(n) for n in guard.names)
        seen = row_text(row, guard.texts) if guard.identifiers else NOTHING_TO_MATCH
        if clean:
            try:
                if len(guard.clean_rows) >= ACCEPTED_CACHE_SIZE:
                    guard.clean_rows.clear()  # bounded memory; re-checking is correct
                guard.clean_rows[row] = seen
            except TypeError:  # an unhashable (yet clean) value: not remembered
                pass
        return seen

    def _guarded(self, entity: str, name: str, guard: FieldGuard, value: Any) -> Any:
        """`value` if it passes the guard's shape and pattern rules, else None (counted)."""
        reason = guard.reason(value)
        if reason is None:
            if value.__class__ is str:
                if len(guard) >= ACCEPTED_CACHE_SIZE:
                    guard.clear()  # bounded memory; re-checking is correct, only slower
                    guard.add("")
                guard.add(value)
            return value
        self.dropped[(entity, name, reason)] += 1
        return None

    def _drop_own_identifiers(
        self,
        entity: str,
        guard: RowGuard,
        seen: tuple[str, bool],
        values: dict[str, Any],
        landing: dict[str, Any],
    ) -> None:
        """Null each kept value holding one of the record's own direct identifiers
        (case- and accent-insensitive, whole words; values shorter than
        domain.dlp.MIN_EXACT_LENGTH are too common to mean anything)."""
        identifiers, guarded = guard.identifiers, guard.names
        joined, digit_run = seen
        # Fast pre-check (the common case ends here): no name or street occurs anywhere in
        # the kept values, and no run of 7 digits could be a phone/SSN/MRN typed without
        # separators (emails, and phones/SSNs with them, are DLP pattern hits already).
        if not digit_run:
            for name in PRECHECK_IDENTIFIERS:
                raw = values.get(name)
                if (
                    raw.__class__ is str
                    and len(raw) >= MIN_EXACT_LENGTH
                    and (raw.casefold() if raw.isascii() else fold(raw)).strip() in joined
                ):
                    break
            else:
                return
        # Something may match: the exact rules, whole words, outside standard vocabulary.
        needles: list[str] = []
        for name in identifiers:
            raw = values.get(name)
            if raw is None or raw == "":
                continue
            text = str(raw)
            folded = fold(text).strip()
            if len(folded) >= MIN_EXACT_LENGTH:
                needles.append(folded)
            digits = DIGITS_ONLY.sub("", text)  # a phone or SSN typed without separators
            if len(digits) >= 7 and digits != folded:
                needles.append(digits)
        if not needles:
            return
        kept = [
            (n, folded)
            for n in guarded
            if (v := landing.get(n)).__class__ is str
            and v
            and (folded := fold(v)) not in VOCABULARY
        ]
        if not kept:
            return
        for name, value in kept:
            if any(contains_whole(value, needle) for needle in needles):
                landing[name] = None
                self.dropped[(entity, name, "own_identifier")] += 1

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
        guarded: dict[str, FieldGuard] = {}
        for name, actions in policy.fields.items():
            for action in actions:
                if action.startswith("keep:") and action[5:] in KEEP_SHAPES:
                    guarded[name] = FieldGuard(action[5:])
            if len(actions) == 1 and actions[0].startswith("keep:"):
                steps[name] = KEEP  # guarded values are checked per row (RowGuard)
            else:
                steps[name] = tuple(
                    s for a in actions if (s := self._step(a, name, entity)) is not None
                )
        guard = None
        if guarded:
            identifiers = tuple(n for n in OWN_IDENTIFIERS if n in policy.fields)
            names = tuple(guarded)
            guard = RowGuard(names, tuple(guarded.values()), getter_of(names), identifiers)
        identity = self._identity_function(policy) if policy.identity_keys else None
        plan = self._plans[entity] = _EntityPlan(steps, guard, identity)
        return plan

    def _step(self, action: str, name: str, entity: str) -> Step | None:
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
        if action.startswith("keep:") and action[5:] in KEEP_SHAPES:
            guard, guarded = FieldGuard(action[5:]), self._guarded

            def keep_guarded(
                value: Any, system: Any, subject: str, landing: dict, vault: Vault
            ) -> None:
                clean = value is None or (value.__class__ is str and value in guard)
                landing[name] = value if clean else guarded(entity, name, guard, value)

            return keep_guarded
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

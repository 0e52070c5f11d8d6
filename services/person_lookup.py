"""Find one person's subjects and tokens from an email, an MRN or a token - never by plaintext.

The identifier given by the operator is normalized and hashed with the tokenizer exactly as
ingestion hashed identity keys (domain/protect.py), then looked up in vault.identity_keys.
The match is widened to the whole person (every source subject linked in person_xref) and to
the tokens the person had before key rotations (vault.token_rekey), for disclosure history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from domain.normalize import normalize_email, normalize_identifier
from domain.policy import FieldPolicy
from domain.token_chain import token_version
from domain.tokens import Tokenizer


class AmbiguousPersonError(LookupError):
    """The identifier matches more than one person; narrow it (e.g. give --authority)."""


@dataclass
class PersonMatch:
    matched_by: str  # email | mrn | token
    person_tokens: set[str] = field(default_factory=set)
    subject_tokens: set[str] = field(default_factory=set)
    historical_tokens: set[str] = field(default_factory=set)  # before key rotations

    @property
    def found(self) -> bool:
        return bool(self.person_tokens or self.subject_tokens)

    @property
    def all_person_tokens(self) -> list[str]:
        return sorted(self.person_tokens | self.historical_tokens)


def identifier_kind(identifier: str) -> str:
    if token_version(identifier.strip()) is not None:
        return "token"
    return "email" if "@" in identifier else "mrn"


def identity_key_hashes(
    tokenizer: Tokenizer,
    policy: FieldPolicy,
    identifier: str,
    kind: str,
    authority: str | None = None,
) -> list[tuple[str, str]]:
    """(key type, key hash) candidates for an identifier, as protect.py computes them."""
    if kind == "email":
        email = normalize_email(identifier)
        return [("email", tokenizer.token("id:email", email))] if email else []
    mrn = normalize_identifier(identifier)
    if not mrn:
        return []
    if authority is not None:
        authorities = {policy.mrn_authorities.get(authority, authority)}
    else:  # every namespace the policy knows, and MRNs that arrived without one
        authorities = {*policy.mrn_authorities.values(), ""}
    return [
        ("mrn", tokenizer.token("id:mrn", f"{normalize_identifier(a)}|{mrn}"))
        for a in sorted(authorities)
    ]


def find_person(
    conn: psycopg.Connection,
    tokenizer: Tokenizer,
    policy: FieldPolicy,
    identifier: str,
    authority: str | None = None,
    kind: str | None = None,
) -> PersonMatch:
    kind = kind or identifier_kind(identifier)
    match = PersonMatch(kind)
    if kind == "token":
        token = _current_token(conn, identifier.strip())
        rows = conn.execute(
            "select subject_token, person_token from landing.person_xref"
            " where person_token = %s or subject_token = %s",
            (token, token),
        ).fetchall()
        subjects = {s for s, _ in rows}
        if not rows:  # a subject not resolved yet, known only to the vault
            subjects = {
                s
                for (s,) in conn.execute(
                    "select subject_token from vault.identity_keys where subject_token = %s"
                    " union select subject_token from vault.contact_fields"
                    " where subject_token = %s",
                    (token, token),
                )
            }
    else:
        hashes = identity_key_hashes(tokenizer, policy, identifier, kind, authority)
        if not hashes:
            return match
        subjects = {
            s
            for (s,) in conn.execute(
                "select distinct subject_token from vault.identity_keys"
                " where (key_type, key_hash) in (select * from unnest(%s::text[], %s::text[]))",
                ([t for t, _ in hashes], [h for _, h in hashes]),
            )
        }
    if not subjects:
        return match
    persons = {
        p
        for (p,) in conn.execute(
            "select distinct person_token from landing.person_xref where subject_token = any(%s)",
            (list(subjects),),
        )
    }
    if kind == "mrn" and authority is None and len(persons) > 1:
        raise AmbiguousPersonError(
            f"the MRN matches {len(persons)} persons in different namespaces; give --authority"
        )
    match.person_tokens = persons
    match.subject_tokens = subjects | {
        s
        for (s,) in conn.execute(
            "select subject_token from landing.person_xref where person_token = any(%s)",
            (list(persons),),
        )
    }
    match.historical_tokens = {
        old
        for (old,) in conn.execute(
            "select old_token from vault.token_rekey where new_token = any(%s)",
            (list(persons | match.subject_tokens),),
        )
    }
    return match


def _current_token(conn: psycopg.Connection, token: str) -> str:
    """Follow key rotations from an old token to the current one."""
    for _ in range(16):
        row = conn.execute(
            "select new_token from vault.token_rekey where old_token = %s", (token,)
        ).fetchone()
        if row is None:
            return token
        token = row[0]
    return token

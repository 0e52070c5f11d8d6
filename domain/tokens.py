"""Keyed, deterministic, versioned tokens (HMAC-SHA256) for people and identifiers.

A token is `t<version>_<32 hex>`: the key version is part of the token, so after a key
rotation old and new tokens can never be confused, and a mapping re-keys joins.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

TOKEN_HEX_CHARS = 32  # 128 bits: collisions are not a practical concern at any realistic scale


@dataclass(frozen=True, slots=True)
class Tokenizer:
    key: bytes
    version: int = 1

    def token(self, kind: str, value: str) -> str:
        """Token for `value` in namespace `kind` ('fhir', 'mrn', 'email', ...).

        The namespace keeps an MRN '123' and a CRM id '123' from sharing a token.
        """
        digest = hmac.new(self.key, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()
        return f"t{self.version}_{digest[:TOKEN_HEX_CHARS]}"

    def subject_token(self, subject_system: str, subject_id: str) -> str:
        """The token of a source-level subject reference (see docs/data-contracts.md)."""
        return self.token(f"subject:{subject_system}", subject_id)

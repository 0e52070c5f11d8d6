"""Keyed, deterministic, versioned tokens (HMAC-SHA256) for people and identifiers.

A token is `t<version>_<32 hex>`: the key version is part of the token, so after a key
rotation old and new tokens can never be confused, and a mapping re-keys joins.

Speed: keying an HMAC costs as much as hashing a short identifier, and building a stdlib
`hmac.HMAC` object per token costs more than both. So a keyed HMAC state is made once per
key (and, on hot paths, per namespace) and `copy()`-ed per token; the bytes hashed and the
tokens are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.hmac import HMAC

TOKEN_HEX_CHARS = 32  # 128 bits: collisions are not a practical concern at any realistic scale
TOKEN_BYTES = TOKEN_HEX_CHARS // 2  # hex(digest[:16]) == hexdigest[:32], without the long hex
SEPARATOR = "\x1f"  # between a namespace and the value: `kind \x1f value`


def keyed_hmac(key: bytes, prefix: bytes = b"") -> HMAC:
    """A fresh HMAC-SHA256 state keyed with `key` that has absorbed `prefix`; copy() it per use."""
    mac = HMAC(key, SHA256())
    mac.update(prefix)
    return mac


@lru_cache(maxsize=64)
def _shared_keyed(key: bytes) -> HMAC:
    """One keyed state per key for the general `token` path. Shared: only ever copy() it."""
    return keyed_hmac(key)


def hmac_digest(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256(key, message) from a cached keyed state (no re-keying per call)."""
    mac = _shared_keyed(key).copy()
    mac.update(message)
    return mac.finalize()


@dataclass(frozen=True, slots=True)
class Tokenizer:
    key: bytes = field(repr=False)  # never in a repr (a Protector's repr includes its tokenizer)
    version: int = 1

    def token(self, kind: str, value: str) -> str:
        """Token for `value` in namespace `kind` ('fhir', 'mrn', 'email', ...).

        The namespace keeps an MRN '123' and a CRM id '123' from sharing a token.
        """
        digest = hmac_digest(self.key, f"{kind}{SEPARATOR}{value}".encode())
        return f"t{self.version}_{digest[:TOKEN_BYTES].hex()}"

    def subject_token(self, subject_system: str, subject_id: str) -> str:
        """The token of a source-level subject reference (see docs/data-contracts.md)."""
        return self.token(f"subject:{subject_system}", subject_id)

    def namespace(self, kind: str) -> Callable[[str], str]:
        """`lambda value: self.token(kind, value)` for one namespace, precomputed for hot loops.

        The keyed state, with `kind \\x1f` already absorbed, lives in the closure: a token
        costs one copy, one update and one finalize.
        """
        copy = keyed_hmac(self.key, f"{kind}{SEPARATOR}".encode()).copy
        head = f"t{self.version}_"

        def token(value: str) -> str:
            mac = copy()
            mac.update(f"{value}".encode())
            return head + mac.finalize()[:TOKEN_BYTES].hex()

        return token

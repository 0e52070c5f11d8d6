"""Re-keyable tokens: a token of version v is the HMAC, under key v, of the version v-1 token.

Tokens are one-way, and the identifiers behind them are never stored, so a rotated key could
not recompute new tokens from plaintext. Chaining solves that: the next version's token is a
keyed function of the previous token alone, so `rekey` turns every stored token into the
token a fresh ingest under the new key produces for the same identifier. An attacker holding
an old key can compute old tokens from guessed identifiers but not current ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from domain.tokens import (
    SEPARATOR,
    TOKEN_BYTES,
    TOKEN_HEX_CHARS,
    Tokenizer,
    hmac_digest,
    keyed_hmac,
)

TOKEN_PATTERN = re.compile(rf"^t(\d+)_[0-9a-f]{{{TOKEN_HEX_CHARS}}}$")
SQL_TOKEN_PATTERN = rf"^t[0-9]+_[0-9a-f]{{{TOKEN_HEX_CHARS}}}$"


class TokenVersionError(ValueError):
    """A token cannot be re-keyed to the requested version (not a token, or newer)."""


def token_version(token: str) -> int | None:
    """The key version written in a token, or None when the string is not a token."""
    match = TOKEN_PATTERN.match(token)
    return int(match.group(1)) if match else None


def rekey_step(key: bytes, version: int, previous_token: str) -> str:
    """The version `version` token derived from the version `version - 1` token."""
    digest = hmac_digest(key, f"rekey{SEPARATOR}{previous_token}".encode())
    return f"t{version}_{digest[:TOKEN_BYTES].hex()}"


@dataclass(frozen=True, slots=True, repr=False)
class ChainedTokenizer(Tokenizer):
    """A Tokenizer at `version` whose tokens chain through every earlier key version.

    chain: the keys of versions base_version .. version-1, oldest first. With an empty chain
    it behaves exactly like Tokenizer (tokens of a first key version are unchanged).
    """

    chain: tuple[bytes, ...] = ()
    base_version: int = 1
    _steps: tuple[tuple[int, bytes], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = (*self.chain, self.key)
        steps = tuple((self.base_version + i, key) for i, key in enumerate(keys))
        object.__setattr__(self, "_steps", steps)

    def token(self, kind: str, value: str) -> str:
        if not self.chain:
            return Tokenizer.token(self, kind, value)
        digest = hmac_digest(self.chain[0], f"{kind}{SEPARATOR}{value}".encode())
        token = f"t{self.base_version}_{digest[:TOKEN_BYTES].hex()}"
        for version, key in self._steps[1:]:
            token = rekey_step(key, version, token)
        return token

    def namespace(self, kind: str) -> Callable[[str], str]:
        """`lambda value: self.token(kind, value)` with every keyed state precomputed."""
        if not self.chain:
            return Tokenizer.namespace(self, kind)
        first = keyed_hmac(self.chain[0], f"{kind}{SEPARATOR}".encode()).copy
        head = f"t{self.base_version}_"
        rekeys = tuple(
            (f"t{version}_", keyed_hmac(key, f"rekey{SEPARATOR}".encode()).copy)
            for version, key in self._steps[1:]
        )

        def token(value: str) -> str:
            mac = first()
            mac.update(f"{value}".encode())
            chained = head + mac.finalize()[:TOKEN_BYTES].hex()
            for step_head, copy in rekeys:
                mac = copy()
                mac.update(chained.encode())
                chained = step_head + mac.finalize()[:TOKEN_BYTES].hex()
            return chained

        return token

    def rekey(self, token: str) -> str:
        """The current-version token for a token of any earlier version in the chain."""
        version = token_version(token)
        if version is None or version > self.version or version < self.base_version:
            raise TokenVersionError(
                f"cannot re-key a token of version {version} to v{self.version}"
            )
        return self._forward(token, version)

    def _forward(self, token: str, from_version: int) -> str:
        for version, key in self._steps[from_version - self.base_version + 1 :]:
            token = rekey_step(key, version, token)
        return token

    def __repr__(self) -> str:  # never the key bytes
        return f"ChainedTokenizer(version={self.version}, base_version={self.base_version})"


def chained_tokenizer(keys: Mapping[int, bytes], version: int) -> ChainedTokenizer:
    """The tokenizer of `version` from the keyring's token keys (versions base..version)."""
    base = min(keys)
    missing = [v for v in range(base, version + 1) if v not in keys]
    if missing:
        raise TokenVersionError(f"token key versions {missing} are missing from the keyring")
    chain = tuple(keys[v] for v in range(base, version))
    return ChainedTokenizer(key=keys[version], version=version, chain=chain, base_version=base)

"""AES-256-GCM encryption of vault values, bound to their row by associated data.

The associated data names the subject token, the column and the key version, so a
ciphertext copied onto another person or another column fails authentication.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
# Nonces are drawn from os.urandom in blocks: one getrandom() call per NONCE_BLOCK nonces
# instead of one per encryption (the syscall cost as much as the AES-GCM call). The pool is
# a list whose pop() is atomic, so two threads can never take the same nonce, and it is
# emptied in a forked child, so parent and child never share one either.
NONCE_BLOCK = 256
_nonces: list[bytes] = []
os.register_at_fork(after_in_child=_nonces.clear)


def _refill_nonces() -> bytes:
    """Refill the pool with fresh random nonces and return one more (for the caller)."""
    block = os.urandom(NONCE_BYTES * (NONCE_BLOCK + 1))
    _nonces.extend([block[i : i + NONCE_BYTES] for i in range(0, len(block), NONCE_BYTES)])
    return _nonces.pop()


class VaultDecryptionError(Exception):
    """A vault value failed to authenticate: tampered, moved, or under an unknown key."""


def associated_data(subject_token: str, column: str, key_version: int) -> bytes:
    return f"{subject_token}\x1f{column}\x1fv{key_version}".encode()


@dataclass
class VaultCipher:
    keys: dict[int, bytes] = field(repr=False)  # key version -> 32-byte AES key; never shown
    current_version: int

    def __post_init__(self) -> None:
        self._aead = {version: AESGCM(key) for version, key in self.keys.items()}

    # Pickled only to hand a loader's protector to its read worker process (its own child,
    # over a local pipe); the AES-GCM contexts are rebuilt from the keys there.
    def __getstate__(self) -> dict:
        return {"keys": self.keys, "current_version": self.current_version}

    def __setstate__(self, state: dict) -> None:
        self.keys, self.current_version = state["keys"], state["current_version"]
        self.__post_init__()

    def encrypt(self, subject_token: str, column: str, plaintext: str | bytes) -> tuple[int, bytes]:
        """Returns (key version, nonce || ciphertext)."""
        version = self.current_version
        try:
            nonce = _nonces.pop()
        except IndexError:
            nonce = _refill_nonces()
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        # associated_data(), inlined: this runs once per vault value on ingest.
        aad = f"{subject_token}\x1f{column}\x1fv{version}".encode()
        return version, nonce + self._aead[version].encrypt(nonce, data, aad)

    def decrypt(self, subject_token: str, column: str, key_version: int, blob: bytes) -> str:
        return self.decrypt_bytes(subject_token, column, key_version, blob).decode()

    def decrypt_bytes(
        self, subject_token: str, column: str, key_version: int, blob: bytes
    ) -> bytes:
        aead = self._aead.get(key_version)
        if aead is None:
            raise VaultDecryptionError(f"no key of version {key_version} for column {column}")
        try:
            plain = aead.decrypt(
                blob[:NONCE_BYTES],
                blob[NONCE_BYTES:],
                associated_data(subject_token, column, key_version),
            )
        except InvalidTag:
            raise VaultDecryptionError(
                f"vault value for column {column} failed authentication"
            ) from None
        return plain

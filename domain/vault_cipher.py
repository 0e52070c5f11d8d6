"""AES-256-GCM encryption of vault values, bound to their row by associated data.

The associated data names the subject token, the column and the key version, so a
ciphertext copied onto another person or another column fails authentication.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class VaultDecryptionError(Exception):
    """A vault value failed to authenticate: tampered, moved, or under an unknown key."""


def associated_data(subject_token: str, column: str, key_version: int) -> bytes:
    return f"{subject_token}\x1f{column}\x1fv{key_version}".encode()


@dataclass
class VaultCipher:
    keys: dict[int, bytes]  # key version -> 32-byte AES key
    current_version: int

    def __post_init__(self) -> None:
        self._aead = {version: AESGCM(key) for version, key in self.keys.items()}

    def encrypt(self, subject_token: str, column: str, plaintext: str | bytes) -> tuple[int, bytes]:
        """Returns (key version, nonce || ciphertext)."""
        version = self.current_version
        nonce = os.urandom(NONCE_BYTES)
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        sealed = self._aead[version].encrypt(
            nonce, data, associated_data(subject_token, column, version)
        )
        return version, nonce + sealed

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

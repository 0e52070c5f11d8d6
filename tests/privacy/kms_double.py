"""A second implementation of the KMS seam, for tests: a separate key service object.

It holds its own master keys (by key id) that never leave it, wraps with AES key wrap
(RFC 5649, with padding) over the encryption context's digest and the data key, and refuses
an unknown key id or a context that does not match - as AWS KMS or Vault Transit would.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

CONTEXT_BYTES = 16


class KeyServiceError(Exception):
    """What the service answers on refusal (carries no key material)."""


class InMemoryKms:
    def __init__(self, key_ids: tuple[str, ...] = ("alias/audience-hub",)) -> None:
        self._keys = {key_id: os.urandom(32) for key_id in key_ids}
        self.calls: list[tuple[str, str]] = []  # (operation, key id): an access log

    def encrypt(self, key_id: str, plaintext: bytes, context: str) -> bytes:
        self.calls.append(("encrypt", key_id))
        bound = hashlib.sha256(context.encode()).digest()[:CONTEXT_BYTES] + plaintext
        return aes_key_wrap_with_padding(self._key(key_id), bound)

    def decrypt(self, key_id: str, ciphertext: bytes, context: str) -> bytes:
        self.calls.append(("decrypt", key_id))
        try:
            bound = aes_key_unwrap_with_padding(self._key(key_id), ciphertext)
        except InvalidUnwrap:
            raise KeyServiceError("InvalidCiphertextException") from None
        if bound[:CONTEXT_BYTES] != hashlib.sha256(context.encode()).digest()[:CONTEXT_BYTES]:
            raise KeyServiceError("InvalidCiphertextException: context mismatch")
        return bound[CONTEXT_BYTES:]

    def _key(self, key_id: str) -> bytes:
        if key_id not in self._keys:
            raise KeyServiceError("NotFoundException")
        return self._keys[key_id]

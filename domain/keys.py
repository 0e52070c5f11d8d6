"""Where tokenization and vault keys come from: one interface, swappable providers.

The default provider keeps a keyring file (mode 0600) under the project's state folder,
created on first use; `HUB_TOKEN_KEY` / `HUB_VAULT_KEY` (base64, 32 bytes) override it, as a
deployment would inject them from a secret store. A cloud KMS implements the same protocol.
Keys never leave this module except as bytes handed to the cipher and tokenizer.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from domain.tokens import Tokenizer
from domain.vault_cipher import VaultCipher

KEY_BYTES = 32


class KeyProvider(Protocol):
    def tokenizer(self) -> Tokenizer: ...

    def vault_cipher(self) -> VaultCipher: ...


class KeyConfigurationError(Exception):
    """A key is missing or malformed; the message names the setting, never the key."""


def _decode_key(name: str, encoded: str) -> bytes:
    try:
        key = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise KeyConfigurationError(f"{name} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyConfigurationError(f"{name} must decode to {KEY_BYTES} bytes")
    return key


@dataclass
class KeyringFileProvider:
    """Keys in a local keyring file, with environment overrides for deployments."""

    path: Path

    def _load(self) -> dict:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            ring = {
                "token": {"current": 1, "keys": {"1": _new_key()}},
                "vault": {"current": 1, "keys": {"1": _new_key()}},
            }
            # Create with 0600 from the start: never a moment where the keys are world-readable.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(ring, handle)
            return ring
        return json.loads(self.path.read_text())

    def _section(self, name: str) -> tuple[int, dict[int, bytes]]:
        override = os.environ.get(f"HUB_{name.upper()}_KEY")
        if override:
            return 1, {1: _decode_key(f"HUB_{name.upper()}_KEY", override)}
        section = self._load()[name]
        keys = {
            int(version): _decode_key(f"keyring {name} v{version}", encoded)
            for version, encoded in section["keys"].items()
        }
        return int(section["current"]), keys

    def tokenizer(self) -> Tokenizer:
        current, keys = self._section("token")
        return Tokenizer(key=keys[current], version=current)

    def vault_cipher(self) -> VaultCipher:
        current, keys = self._section("vault")
        return VaultCipher(keys=keys, current_version=current)


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()

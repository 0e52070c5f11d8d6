"""Where tokenization and vault keys come from: versioned data keys, wrapped by a master key.

Envelope encryption. The keyring file (JSON, mode 0600, in the state folder) holds every
version of the token and vault data keys, each wrapped by a master key (domain/master_keys.py:
a passphrase, HUB_MASTER_KEY, a local master key file for the demo, or a cloud KMS / Vault
Transit through `KmsClient`). The keyring header records which kind of master wrapped it; a
mismatch is an error naming the setting to provide. Versions can be added (pending or
current), promoted, retired (vault only) and re-wrapped under another master.

HUB_TOKEN_KEY / HUB_VAULT_KEY (base64) still override the keyring with a single version 1 key
each. Key bytes leave this module only inside a tokenizer or cipher whose repr hides them;
errors name settings and versions, never key material.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.master_keys import (
    KEY_BYTES,
    EnvMasterKey,
    KeyConfigurationError,
    KmsClient,
    KmsMasterKey,
    LocalMasterKeyFile,
    MasterKeyProvider,
    PassphraseMasterKey,
    _b64,
    _decode_key,
    _write_private,
    default_master,
    master_file_for,
    master_from_header,
)
from domain.token_chain import ChainedTokenizer, chained_tokenizer
from domain.tokens import Tokenizer
from domain.vault_cipher import VaultCipher

# Re-exported: callers import keys, errors and masters from this module.
__all__ = [
    "KEY_BYTES",
    "EnvMasterKey",
    "KeyConfigurationError",
    "KeyProvider",
    "KeyVersions",
    "KeyringFileProvider",
    "KmsClient",
    "KmsMasterKey",
    "LocalMasterKeyFile",
    "MasterKeyProvider",
    "PassphraseMasterKey",
    "ProvidedVaultCipher",
    "master_file_for",
    "wrap_context",
]

KEYRING_FORMAT = 2
KINDS = ("token", "vault")


class KeyProvider(Protocol):
    def tokenizer(self) -> Tokenizer: ...

    def vault_cipher(self) -> VaultCipher: ...


def wrap_context(kind: str, version: int) -> str:
    """What a wrapped data key is bound to: a vault key cannot be replayed as a token key."""
    return f"audience-hub/{kind}/v{version}"


@dataclass(frozen=True)
class KeyVersions:
    """What a keyring holds for one kind, without key material (safe to print)."""

    kind: str
    current: int
    available: tuple[int, ...]
    retired: tuple[int, ...]
    pending: tuple[int, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "current": self.current,
            "available": list(self.available),
            "retired": list(self.retired),
            "pending": list(self.pending),
        }


@dataclass(repr=False)
class ProvidedVaultCipher(VaultCipher):
    """A VaultCipher that reloads its keys when it meets a version it does not know yet.

    During an online rotation, long-running readers created before the new version existed
    keep decrypting rows the rotation has already re-encrypted.
    """

    reload: Callable[[], tuple[int, dict[int, bytes]]] | None = field(default=None, compare=False)

    def decrypt_bytes(
        self, subject_token: str, column: str, key_version: int, blob: bytes
    ) -> bytes:
        if key_version not in self._aead and self.reload is not None:
            self.current_version, self.keys = self.reload()
            self._aead = {version: AESGCM(key) for version, key in self.keys.items()}
        return VaultCipher.decrypt_bytes(self, subject_token, column, key_version, blob)

    def __repr__(self) -> str:  # never the key bytes
        return f"VaultCipher(current_version={self.current_version}, versions={sorted(self.keys)})"


@dataclass
class KeyringFileProvider:
    """Versioned data keys in a keyring file, wrapped by a master key (see module docstring).

    master: the master key provider; None selects it from the keyring header (existing
    keyring) or the environment (new keyring).
    """

    path: Path
    master: MasterKeyProvider | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def __repr__(self) -> str:
        return f"KeyringFileProvider(path={str(self.path)!r})"

    # reading

    def tokenizer(self, version: int | None = None) -> ChainedTokenizer:
        """The tokenizer of the current version (or of `version`, e.g. a pending one)."""
        override = os.environ.get("HUB_TOKEN_KEY")
        if override:
            return chained_tokenizer({1: _decode_key("HUB_TOKEN_KEY", override)}, 1)
        current, keys = self._keys("token", include_pending=version is not None)
        return chained_tokenizer(keys, version or current)

    def vault_cipher(self) -> ProvidedVaultCipher:
        current, keys = self._vault_section()
        return ProvidedVaultCipher(keys=keys, current_version=current, reload=self._vault_section)

    def versions(self, kind: str) -> KeyVersions:
        if os.environ.get(f"HUB_{kind.upper()}_KEY"):
            return KeyVersions(kind, 1, (1,), (), ())
        section = self._ring()[kind]
        return KeyVersions(
            kind,
            int(section["current"]),
            tuple(sorted(int(v) for v in section["keys"])),
            tuple(sorted(section.get("retired", []))),
            tuple(sorted(section.get("pending", []))),
        )

    def master_kind(self) -> str:
        return self._ring()["master"]["kind"]

    # changing (each change rewrites the file atomically under an exclusive lock)

    def add_version(self, kind: str, pending: bool = False) -> int:
        """A new random data key version. pending: do not make it current yet."""
        self._refuse_env_override(kind)
        with self._locked() as ring:
            master = self._master_for(ring)
            section = ring[kind]
            version = max([int(v) for v in section["keys"]] + section.get("retired", [])) + 1
            key = secrets.token_bytes(KEY_BYTES)
            section["keys"][str(version)] = _b64(master.wrap(key, wrap_context(kind, version)))
            if pending:
                section.setdefault("pending", []).append(version)
            else:
                section["current"] = version
            return version

    def promote(self, kind: str, version: int) -> None:
        """Make a (pending) version current."""
        with self._locked() as ring:
            section = ring[kind]
            if str(version) not in section["keys"]:
                raise KeyConfigurationError(f"no {kind} key of version {version} to promote")
            section["current"] = version
            section["pending"] = [v for v in section.get("pending", []) if v != version]

    def discard_pending(self, kind: str, version: int) -> None:
        """Drop a pending version that never became current (an abandoned rotation)."""
        with self._locked() as ring:
            section = ring[kind]
            if version in section.get("pending", []):
                section["keys"].pop(str(version), None)
                section["pending"] = [v for v in section["pending"] if v != version]

    def retire(self, kind: str, versions: list[int]) -> list[int]:
        """Destroy the wrapped keys of old versions (never the current one)."""
        if kind == "token":
            raise KeyConfigurationError(
                "token keys cannot be retired: current tokens chain through every version"
            )
        with self._locked() as ring:
            section = ring[kind]
            retired = []
            for version in versions:
                if version == int(section["current"]):
                    raise KeyConfigurationError(f"cannot retire the current {kind} key")
                if section["keys"].pop(str(version), None) is not None:
                    retired.append(version)
                    section.setdefault("retired", []).append(version)
            return retired

    def rewrap(self, new_master: MasterKeyProvider) -> None:
        """Re-wrap every data key under another master (e.g. local file -> passphrase/KMS)."""
        with self._locked() as ring:
            old = self._master_for(ring)
            for kind in KINDS:
                keys = ring[kind]["keys"]
                for version, wrapped in list(keys.items()):
                    context = wrap_context(kind, int(version))
                    plain = old.unwrap(base64.b64decode(wrapped), context)
                    keys[version] = _b64(new_master.wrap(plain, context))
            ring["master"] = new_master.header()
            self.master = new_master

    # internals

    def _refuse_env_override(self, kind: str) -> None:
        if os.environ.get(f"HUB_{kind.upper()}_KEY"):
            raise KeyConfigurationError(
                f"HUB_{kind.upper()}_KEY is set: rotate that key in the secret store instead"
            )

    def _vault_section(self) -> tuple[int, dict[int, bytes]]:
        override = os.environ.get("HUB_VAULT_KEY")
        if override:
            return 1, {1: _decode_key("HUB_VAULT_KEY", override)}
        return self._keys("vault", include_pending=False)

    def _keys(self, kind: str, include_pending: bool) -> tuple[int, dict[int, bytes]]:
        ring = self._ring()
        master = self._master_for(ring)
        section = ring[kind]
        pending = set(section.get("pending", []))
        keys = {
            int(version): master.unwrap(base64.b64decode(wrapped), wrap_context(kind, int(version)))
            for version, wrapped in section["keys"].items()
            if include_pending or int(version) not in pending
        }
        return int(section["current"]), keys

    def _master_for(self, ring: dict[str, Any]) -> MasterKeyProvider:
        if self.master is None:
            self.master = master_from_header(self.path, ring["master"])
        elif self.master.kind != ring["master"].get("kind"):
            raise KeyConfigurationError(
                f"the keyring is wrapped by a {ring['master'].get('kind')!r} master,"
                f" not {self.master.kind!r}; use `hub keys rewrap` to change it"
            )
        return self.master

    def _ring(self) -> dict[str, Any]:
        if not self.path.exists():
            with self._locked() as ring:
                return ring
        ring = json.loads(self.path.read_text())
        if ring.get("format") != KEYRING_FORMAT:
            with self._locked() as ring:  # upgrades a plain (format 1) keyring in place
                return ring
        return ring

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The keyring under an exclusive lock; written back (0600, atomic) on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            ring = self._read_or_create()
            yield ring
            _write_private(self.path, json.dumps(ring, indent=1))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read_or_create(self) -> dict[str, Any]:
        if self.path.exists():
            ring = json.loads(self.path.read_text())
            if ring.get("format") == KEYRING_FORMAT:
                return ring
            return self._wrap_plain(ring)  # format 1: plain base64 keys, from before envelopes
        fresh = {
            kind: {"current": 1, "keys": {"1": _b64(secrets.token_bytes(KEY_BYTES))}}
            for kind in KINDS
        }
        return self._wrap_plain(fresh)

    def _wrap_plain(self, plain: dict[str, Any]) -> dict[str, Any]:
        master = self.master or default_master(self.path)
        self.master = master
        ring: dict[str, Any] = {"format": KEYRING_FORMAT, "master": master.header()}
        for kind in KINDS:
            section = plain[kind]
            ring[kind] = {
                "current": int(section["current"]),
                "keys": {
                    version: _b64(
                        master.wrap(
                            _decode_key(f"keyring {kind} v{version}", encoded),
                            wrap_context(kind, int(version)),
                        )
                    )
                    for version, encoded in section["keys"].items()
                },
                "retired": [],
                "pending": [],
            }
        return ring

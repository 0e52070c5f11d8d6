"""Master keys: what wraps the hub's data keys (envelope encryption).

- `PassphraseMasterKey`: scrypt over a passphrase (HUB_KEYRING_PASSPHRASE);
- `EnvMasterKey`: HUB_MASTER_KEY (base64, 32 bytes) injected from a secret store;
- `LocalMasterKeyFile`: a generated 0600 file beside the keyring (zero-configuration demo);
- `KmsMasterKey`: a cloud KMS or HashiCorp Vault Transit behind the `KmsClient` protocol.

Each wraps a data key with authenticated encryption bound to a context (the key's kind and
version), and never exposes the master key itself. Errors name settings, never key bytes.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from abc import ABC, abstractmethod
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

KEY_BYTES = 32
NONCE_BYTES = 12
# scrypt cost: tens of ms and 16 MiB per derivation; derived once per process and passphrase.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class KeyConfigurationError(Exception):
    """A key is missing, malformed or cannot be unwrapped; names the setting, never the key."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _decode_key(name: str, encoded: str) -> bytes:
    try:
        key = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise KeyConfigurationError(f"{name} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyConfigurationError(f"{name} must decode to {KEY_BYTES} bytes")
    return key


def _write_private(path: Path, text: str, exclusive: bool = False) -> None:
    """Write with mode 0600 from the first byte; replace atomically unless exclusive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class MasterKeyProvider(ABC):
    """Wraps and unwraps data keys. Implementations never expose the master key itself."""

    kind: str

    @abstractmethod
    def wrap(self, data_key: bytes, context: str) -> bytes: ...

    @abstractmethod
    def unwrap(self, wrapped: bytes, context: str) -> bytes: ...

    def header(self) -> dict[str, Any]:
        """What the keyring records about this master (never key material)."""
        return {"kind": self.kind}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r})"


class _AesGcmMaster(MasterKeyProvider):
    """A master key held in process memory, wrapping with AES-256-GCM (context as AAD)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def wrap(self, data_key: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, context.encode())

    def unwrap(self, wrapped: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context.encode()
            )
        except InvalidTag:
            raise KeyConfigurationError(
                f"the keyring's {context} key does not unwrap under the {self.kind} master key"
                f" ({self.hint})"
            ) from None

    hint = "wrong master key"


class EnvMasterKey(_AesGcmMaster):
    kind = "env"
    hint = "check HUB_MASTER_KEY"

    def __init__(self, encoded: str | None = None) -> None:
        encoded = encoded if encoded is not None else os.environ.get("HUB_MASTER_KEY", "")
        if not encoded:
            raise KeyConfigurationError("the keyring is wrapped under HUB_MASTER_KEY; set it")
        super().__init__(_decode_key("HUB_MASTER_KEY", encoded))


@lru_cache(maxsize=8)
def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(passphrase.encode())


class PassphraseMasterKey(_AesGcmMaster):
    kind = "passphrase"
    hint = "check HUB_KEYRING_PASSPHRASE"

    def __init__(
        self,
        passphrase: str,
        salt: bytes | None = None,
        n: int = SCRYPT_N,
        r: int = SCRYPT_R,
        p: int = SCRYPT_P,
    ) -> None:
        if not passphrase:
            raise KeyConfigurationError("HUB_KEYRING_PASSPHRASE is empty")
        self.salt = salt or os.urandom(16)
        self.cost = (n, r, p)
        super().__init__(_scrypt(passphrase, self.salt, n, r, p))

    @classmethod
    def from_header(cls, passphrase: str | None, header: dict[str, Any]) -> PassphraseMasterKey:
        if not passphrase:
            raise KeyConfigurationError(
                "the keyring is wrapped under a passphrase; set HUB_KEYRING_PASSPHRASE"
            )
        scrypt = header["scrypt"]
        return cls(
            passphrase, base64.b64decode(scrypt["salt"]), scrypt["n"], scrypt["r"], scrypt["p"]
        )

    def header(self) -> dict[str, Any]:
        n, r, p = self.cost
        return {"kind": self.kind, "scrypt": {"salt": _b64(self.salt), "n": n, "r": r, "p": p}}


class LocalMasterKeyFile(_AesGcmMaster):
    """A generated master key in a 0600 file: the zero-configuration demo default."""

    kind = "local-file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.hint = f"the master key file {self.path.name} does not match this keyring"
        if not self.path.exists():
            _write_private(self.path, _b64(secrets.token_bytes(KEY_BYTES)) + "\n", exclusive=True)
        super().__init__(
            _decode_key(f"master key file {self.path.name}", self.path.read_text().strip())
        )

    def header(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.path.name}


class KmsClient(Protocol):
    """The few calls a cloud KMS or Vault Transit offers: encrypt/decrypt under a named key.

    AWS KMS: Encrypt/Decrypt with KeyId and EncryptionContext={"purpose": context}.
    GCP KMS: encrypt/decrypt with additional_authenticated_data=context.
    Vault Transit: POST transit/encrypt/<key_id> and transit/decrypt/<key_id> with the
    base64 plaintext and `associated_data` (aes256-gcm96 keys) or `context` (derived keys).
    The master key never leaves the service; only 32-byte data keys travel, over TLS.
    """

    def encrypt(self, key_id: str, plaintext: bytes, context: str) -> bytes: ...

    def decrypt(self, key_id: str, ciphertext: bytes, context: str) -> bytes: ...


class KmsMasterKey(MasterKeyProvider):
    """Data keys wrapped by an external key service; callers do not change."""

    kind = "kms"

    def __init__(self, client: KmsClient, key_id: str) -> None:
        self.client = client
        self.key_id = key_id

    def wrap(self, data_key: bytes, context: str) -> bytes:
        return self.client.encrypt(self.key_id, data_key, context)

    def unwrap(self, wrapped: bytes, context: str) -> bytes:
        try:
            return self.client.decrypt(self.key_id, wrapped, context)
        except Exception as error:  # the service's own error types; never echo their text
            raise KeyConfigurationError(
                f"the key service refused to unwrap the {context} key under {self.key_id}"
                f" ({type(error).__name__})"
            ) from None

    def header(self) -> dict[str, Any]:
        return {"kind": self.kind, "key_id": self.key_id}


def default_master(keyring_path: Path) -> MasterKeyProvider:
    """The master for a new keyring: HUB_MASTER_KEY, else a passphrase, else a local file."""
    if os.environ.get("HUB_MASTER_KEY"):
        return EnvMasterKey()
    passphrase = os.environ.get("HUB_KEYRING_PASSPHRASE")
    if passphrase:
        return PassphraseMasterKey(passphrase)
    return LocalMasterKeyFile(master_file_for(keyring_path))


def master_file_for(keyring_path: Path) -> Path:
    return keyring_path.with_name(keyring_path.stem + ".master.key")


def master_from_header(keyring_path: Path, header: dict[str, Any]) -> MasterKeyProvider:
    """The master that wrapped an existing keyring, from its header and the environment."""
    kind = header.get("kind")
    if kind == "env":
        return EnvMasterKey()
    if kind == "passphrase":
        return PassphraseMasterKey.from_header(os.environ.get("HUB_KEYRING_PASSPHRASE"), header)
    if kind == "local-file":
        path = keyring_path.with_name(header.get("file") or master_file_for(keyring_path).name)
        if not path.exists():
            raise KeyConfigurationError(f"master key file {path.name} is missing")
        return LocalMasterKeyFile(path)
    raise KeyConfigurationError(
        f"the keyring is wrapped by a {kind!r} master; construct the provider with it"
    )

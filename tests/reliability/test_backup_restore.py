"""`hub backup` / `hub restore`: an encrypted backup restored into a fresh PostgreSQL is the
same warehouse (vault rows decrypt, the audit chain verifies, the next sync pushes nothing),
and a damaged, truncated, reordered or foreign backup is refused before it touches anything."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.email.http_api import HttpEngine
from connectors.warehouse.audit import verify_chain
from connectors.warehouse.database import Warehouse
from connectors.warehouse.embedded import stop_embedded
from domain.keys import KEY_BYTES
from domain.vault_cipher import VaultCipher
from services.backup import (
    MAGIC,
    BackupIntegrityError,
    BackupKeyError,
    BackupKeys,
    TargetNotEmptyError,
    backup_warehouse,
    restore_warehouse,
    verify_backup,
)
from services.sync import sync_audience
from tests.reliability.conftest import ENGINE_SECRET, ENGINE_TOKEN
from tests.reliability.figures import FIGURES
from tests.reliability.support import (
    BULK_AUDIENCE,
    CountingDelivery,
    Databases,
    add_bulk_audience,
    differences,
    snapshot,
)

PASSPHRASE = "correct horse battery staple"
EVERYTHING = ("landing", "vault", "quarantine", "activation", "engagement", "intermediate", "marts")


def _sync(warehouse: Warehouse, engine, cipher):
    api = HttpEngine(engine.base_url, ENGINE_TOKEN, ENGINE_SECRET, str(engine.ca_cert_path))
    with warehouse.connect() as conn:
        return sync_audience(
            conn, api, cipher, destination="sandbox", audience=BULK_AUDIENCE, batch_size=50
        )


def test_restore_into_a_fresh_server_is_the_same_warehouse(
    databases: Databases, built_template, cipher, sandbox, tmp_path: Path, figures
):
    source = databases.create("rel_backup_source", template=built_template)
    with source.connect() as conn:
        add_bulk_audience(conn, cipher, 150)
    delivery = CountingDelivery()
    engine = sandbox(delivery=delivery)
    assert _sync(source, engine, cipher).added == 150
    uri = str(tmp_path / "warehouse.hubbackup")
    manifest = backup_warehouse(
        source.url(), uri, BackupKeys(cipher=cipher, passphrase=PASSPHRASE), chunk_bytes=256 << 10
    )
    figures.add("backups_taken")
    assert manifest.chunks > 1 and manifest.tables["vault.contacts"] > 0
    raw = Path(uri).read_bytes()
    assert b"bulk1@example.org" not in raw and b"vault" not in raw[len(MAGIC) + 4 :]

    restored = Warehouse(database_url=None, state_path=tmp_path / "restored-state")
    try:
        # The passphrase alone opens it; the vault rows inside still need the same keyring.
        restore_warehouse(restored.url(), uri, BackupKeys(passphrase=PASSPHRASE))
        restored.ensure_schema()
        figures.add("backups_restored")
        with source.connect() as conn:
            before = snapshot(conn, cipher, EVERYTHING, audit=False)
            audit_before = conn.execute("select count(*) from audit.events").fetchone()[0]
        with restored.connect() as conn:
            after = snapshot(conn, cipher, EVERYTHING, audit=False)  # decrypts every vault row
            intact, bad, checked = verify_chain(conn)
        assert not differences(before, after)
        assert intact, f"audit chain broken at {bad}"
        assert checked == audit_before + 1  # the restore itself is on the chain
        with restored.connect() as conn:
            # restamped with this server's transaction (commit_cursor.py), as rows already read
            files, suppressions = conn.execute(
                "select (select count(distinct xact_id) from landing.source_files),"
                " (select count(distinct xact_id) from engagement.suppressions)"
            ).fetchone()
        assert files == 1 and suppressions <= 1
        figures.add("records_lost", sum((before[t] - after[t]).total() for t in before))

        sends_before = sum(delivery.sends.values())
        again = _sync(restored, engine, cipher)
        assert (again.added, again.updated, again.removed) == (0, 0, 0)
        assert sum(delivery.sends.values()) == sends_before
    finally:
        stop_embedded(tmp_path / "restored-state" / "pg")


@pytest.fixture(scope="module")
def small_backup(databases: Databases, landed_template, cipher, tmp_path_factory) -> Path:
    """A backup of the landed warehouse in small chunks (so there are many to tamper with)."""
    source = databases.create("rel_backup_small", template=landed_template)
    path = tmp_path_factory.mktemp("backups") / "small.hubbackup"
    backup_warehouse(
        source.url(), str(path), BackupKeys(cipher=cipher, passphrase=PASSPHRASE), chunk_bytes=4096
    )
    FIGURES.add("backups_taken")
    return path


def _chunks(data: bytes) -> tuple[bytes, list[bytes]]:
    """(magic + header, [length-prefixed chunk, ...]) of a backup file."""
    (length,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    at = len(MAGIC) + 4 + length
    head, chunks = data[:at], []
    while at < len(data):
        (size,) = struct.unpack(">I", data[at : at + 4])
        chunks.append(data[at : at + 4 + size])
        at += 4 + size
    return head, chunks


def _damaged(small_backup: Path, tmp_path: Path) -> dict[str, Path]:
    data = small_backup.read_bytes()
    head, chunks = _chunks(data)
    middle = len(data) // 2
    variants = {
        "flipped_bit": data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :],
        "truncated": data[: -len(chunks[-1])],
        "cut_mid_chunk": data[:middle],
        "reordered": head + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        "chunk_dropped": head + chunks[0] + b"".join(chunks[2:]),
        "trailing_data": data + chunks[0],
        "header_edited": data.replace(b'"chunk_bytes":4096', b'"chunk_bytes":4097', 1),
        "not_a_backup": b"PGDMP" + os.urandom(1000),
    }
    paths = {}
    for name, content in variants.items():
        paths[name] = tmp_path / f"{name}.hubbackup"
        paths[name].write_bytes(content)
    return paths


def test_damaged_backups_are_refused_before_the_target_is_touched(
    small_backup: Path, databases: Databases, cipher, tmp_path: Path, figures
):
    target = databases.create("rel_restore_target")
    keys = BackupKeys(cipher=cipher, passphrase=PASSPHRASE)
    assert verify_backup(str(small_backup), keys).chunks > 10
    for name, path in _damaged(small_backup, tmp_path).items():
        with pytest.raises(BackupIntegrityError):
            restore_warehouse(target.url(), str(path), keys)
        figures.add("damaged_backups_refused")
        with target.connect() as conn:
            tables = conn.execute(
                "select count(*) from pg_tables where schemaname not in"
                " ('pg_catalog', 'information_schema')"
            ).fetchone()[0]
        assert tables == 0, name


def test_wrong_keys_cannot_open_a_backup(small_backup: Path, cipher):
    other_keyring = VaultCipher({1: os.urandom(KEY_BYTES)}, 1)
    for keys in (
        BackupKeys(passphrase="wrong passphrase"),
        BackupKeys(cipher=other_keyring),
        BackupKeys(cipher=other_keyring, passphrase="also wrong"),
    ):
        with pytest.raises(BackupKeyError):
            verify_backup(str(small_backup), keys)
    assert verify_backup(str(small_backup), BackupKeys(cipher=cipher)).rows > 0
    assert verify_backup(str(small_backup), BackupKeys(passphrase=PASSPHRASE)).rows > 0


def test_restore_refuses_a_database_that_is_not_empty(small_backup: Path, databases, cipher):
    occupied = databases.create("rel_restore_occupied")
    occupied.ensure_schema()
    with pytest.raises(TargetNotEmptyError):
        restore_warehouse(occupied.url(), str(small_backup), BackupKeys(cipher=cipher))


def test_hub_backup_and_restore_commands_round_trip(
    databases: Databases, landed_template, tmp_path: Path, monkeypatch, figures
):
    from pipelines.cli import app

    source = databases.create("rel_cli_source", template=landed_template)
    target = databases.create("rel_cli_target")
    uri = str(tmp_path / "cli.hubbackup")
    monkeypatch.setenv("HUB_BACKUP_PASSPHRASE", PASSPHRASE)
    runner = CliRunner()
    made = runner.invoke(app, ["backup", "--to", uri], env={"DATABASE_URL": source.url()})
    assert made.exit_code == 0, made.output
    assert "backup " in made.output and "@" not in made.output
    figures.add("backups_taken")
    checked = runner.invoke(app, ["restore", "--from", uri, "--verify-only", "--no-key-provider"])
    assert checked.exit_code == 0, checked.output
    done = runner.invoke(
        app, ["restore", "--from", uri, "--json"], env={"DATABASE_URL": target.url()}
    )
    assert done.exit_code == 0, done.output
    figures.add("backups_restored")
    with source.connect() as a, target.connect() as b:
        for table in ("landing.patients", "vault.contact_fields", "quarantine.records"):
            count = f"select count(*) from {table}"
            assert a.execute(count).fetchone() == b.execute(count).fetchone(), table
        assert verify_chain(b)[0]
    again = runner.invoke(app, ["restore", "--from", uri], env={"DATABASE_URL": target.url()})
    assert again.exit_code == 1 and "empty database" in again.output  # no longer empty
    wrong = runner.invoke(
        app,
        ["restore", "--from", uri, "--verify-only", "--no-key-provider"],
        env={"HUB_BACKUP_PASSPHRASE": "not it"},
    )
    assert wrong.exit_code == 1 and "none of the given keys" in wrong.output

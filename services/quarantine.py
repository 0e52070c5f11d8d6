"""Quarantine: list rejected records (PHI-free) and replay them after a fix.

A replay decrypts the stored raw record in memory, parses it again with the source's
connector and, if it now passes, loads it as its own one-record file (so per-file counts
stay true: the original file still shows it quarantined, the replay file shows it loaded).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from connectors.warehouse.audit import record_audit
from connectors.warehouse.database import state_dir
from connectors.warehouse.loader import InputUnit, load_file
from domain.protect import Protector


@dataclass
class QuarantinedRecord:
    quarantine_id: int
    source: str
    file: str
    position: str
    reason: str
    message: str
    replayed: bool

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def list_quarantine(
    conn: psycopg.Connection,
    *,
    source: str | None = None,
    reason: str | None = None,
    include_replayed: bool = False,
    limit: int = 100,
) -> list[QuarantinedRecord]:
    rows = conn.execute(
        "select q.quarantine_id, q.source, f.uri, q.position, q.reason, q.message,"
        " q.replayed_at is not null"
        " from quarantine.records q join landing.source_files f using (file_id)"
        " where (%(source)s::text is null or q.source = %(source)s)"
        " and (%(reason)s::text is null or q.reason = %(reason)s)"
        " and (%(all)s or q.replayed_at is null)"
        " order by q.quarantine_id limit %(limit)s",
        {"source": source, "reason": reason, "all": include_replayed, "limit": limit},
    ).fetchall()
    return [
        QuarantinedRecord(qid, src, Path(uri).name, pos, code, message, replayed)
        for qid, src, uri, pos, code, message, replayed in rows
    ]


@dataclass
class ReplayOutcome:
    quarantine_id: int
    loaded: bool
    reason: str | None  # the reason code if it is still rejected


def _reparse(source: str, payload: bytes, original_uri: str) -> Iterator[InputUnit]:
    if source == "fhir":
        from connectors.fhir import read_fhir_stream

        yield from read_fhir_stream(io.BytesIO(payload))
    elif source == "hl7":
        from connectors.hl7.reader import read_hl7_bytes

        for message in read_hl7_bytes(payload):
            yield message.rejection if message.rejection is not None else list(message.records)
    elif source == "crm":
        yield from _reparse_crm_row(payload, original_uri)
    else:
        raise ValueError(f"cannot replay records of source {source!r}")


def _reparse_crm_row(payload: bytes, original_uri: str) -> Iterator[InputUnit]:
    """A CSV row needs its header: take it from the original export, parse header + row."""
    from connectors.crm import choose_mapping, read_crm
    from connectors.crm.choose import column_names

    mapping = choose_mapping(original_uri)
    header = ",".join(column_names(original_uri, mapping)).encode()
    # The row holds PHI: a private 0600 file in the state folder, removed straight after.
    folder = state_dir() / "tmp"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, path = tempfile.mkstemp(suffix=".csv", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(header + b"\n" + payload + b"\n")
        yield from list(read_crm(path, mapping))
    finally:
        os.unlink(path)


def replay(
    conn: psycopg.Connection,
    protector: Protector,
    quarantine_ids: list[int],
) -> list[ReplayOutcome]:
    outcomes = []
    for quarantine_id in quarantine_ids:
        row = conn.execute(
            "select q.source, q.file_id, q.position, q.payload_key_version, q.payload, f.uri"
            " from quarantine.records q join landing.source_files f using (file_id)"
            " where q.quarantine_id = %s and q.replayed_at is null",
            (quarantine_id,),
        ).fetchone()
        if row is None:
            raise LookupError(f"quarantine record {quarantine_id} not found or already replayed")
        source, file_id, position, key_version, blob, original_uri = row
        payload = protector.cipher.decrypt_bytes(
            f"quarantine:{file_id}", position, key_version, blob
        )
        units = list(_reparse(source, payload, original_uri))
        rejected = [u for u in units if not isinstance(u, list) and hasattr(u, "reason")]
        if rejected or not units:
            reason = rejected[0].reason if rejected else "MISSING_FIELD"
            outcomes.append(ReplayOutcome(quarantine_id, False, reason))
            continue
        digest = hashlib.sha256(b"replay\x1f%d\x1f" % quarantine_id + payload).hexdigest()
        result = load_file(
            conn,
            uri=f"quarantine-replay://{quarantine_id}",
            source=source,
            units=units,
            protector=protector,
            fingerprint=(len(payload), digest),
            audit_action=None,  # audited below as a replay, with the replay mark
        )
        with conn.transaction():
            conn.execute(
                "update quarantine.records set replayed_at = now(), replay_file_id = %s"
                " where quarantine_id = %s",
                (result.file_id, quarantine_id),
            )
            record_audit(conn, "quarantine_replay", f"quarantine.records/{quarantine_id}", 1)
        outcomes.append(ReplayOutcome(quarantine_id, True, None))
    return outcomes

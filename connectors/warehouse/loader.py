"""Load one source file into the warehouse: protected rows by COPY, in one transaction.

A file is loaded whole or not at all: its manifest row, landing rows, vault rows, identity
keys, quarantine rows and its audit record commit together, so a crash leaves no half-loaded
(or loaded but unaudited) file and the re-run starts it again. A file already in the
manifest (same source and SHA-256) is skipped.

Parsing and protection are Python on one core; COPY and the upsert merges are PostgreSQL on
the other. So the two overlap: the reading thread fills batches of rows and a writer thread
stages and merges each full batch on the file's connection (inside its one transaction)
while the next batch is being built. Merging batch by batch keeps the same outcome as one
merge at the end: each upsert lets the newest effective time win, and on a tie the later
batch, as the single merge's `row_id desc` did. Rows go over COPY's binary format with the
staging tables' column types. services.ingest keeps several files in flight on as many connections,
each large one parsed and protected in a read worker process (read_worker.py); LoadTurn
keeps files of one source merging in the order given, and a file whose source is merging
stages its batches until its turn (_Batches._take_merge_lock).
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import smart_open
from psycopg.adapt import PyFormat

from connectors.warehouse.audit import record_audit
from connectors.warehouse.changes import writer_epoch
from connectors.warehouse.database import landing_table
from connectors.warehouse.read_worker import WorkerRead, read_in_worker
from connectors.warehouse.row_batches import RowBatches
from connectors.warehouse.vault_table import (
    STAGING,
    merge_sql,
    staging_columns,
    staging_ddl,
    table_fields,
)
from domain.policy import vault_fields
from domain.protect import Protector
from domain.records import Rejection, SourceRecord

# Rows per staging batch: the per-statement cost of COPY and merge (and the merge's sort of
# the batch) is spread over many rows, while a large file still overlaps reading with
# writing. Measured on FHIR and HL7 at 100k patients: 50,000 rows and 3 pending batches
# load 11-15% faster than 5,000 and 2, for about 150 MB more memory at most.
BATCH_ROWS = 50_000
# Full batches handed to the writer and not yet done before the reader waits: bounds memory
# to a few batches whatever the file size.
PENDING_BATCHES = 3
_BYTES_BINARY_DUMPER = psycopg.adapters.get_dumper(bytes, PyFormat.BINARY)
MERGE_LOCK = 7262003  # advisory lock class: one loading transaction per source at a time
IDENTITY_COLUMNS = ("subject_token", "key_type", "key_hash")
QUARANTINE_COLUMNS = (
    "file_id",
    "source",
    "position",
    "entity",
    "reason",
    "message",
    "payload_key_version",
    "payload",
)
_VAULT, _IDENTITY, _QUARANTINE = STAGING, "identity_incoming", "quarantine.records"

# An input unit is one record as the source counts it: a FHIR resource or CRM row gives one
# SourceRecord; an HL7 message gives several (patient, observations, ...) or one Rejection.
InputUnit = SourceRecord | list[SourceRecord] | Rejection
# A batch for one target: its rows, or (from a read worker) their binary COPY payload.
Batch = list[tuple] | bytes


class MissingColumnsError(RuntimeError):
    """A table lacks columns the field policy gives its entity (names only, no values)."""


@dataclass
class FileLoadResult:
    uri: str
    source: str
    file_id: int | None = None
    read: int = 0
    loaded: int = 0
    quarantined: int = 0
    skipped: bool = False
    rows_by_entity: Counter = field(default_factory=Counter)
    quarantined_by_reason: Counter = field(default_factory=Counter)

    @property
    def reconciled(self) -> bool:
        return self.read == self.loaded + self.quarantined

    def as_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "source": self.source,
            "read": self.read,
            "loaded": self.loaded,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "quarantined_by_reason": dict(self.quarantined_by_reason),
            "rows_by_entity": dict(self.rows_by_entity),
        }


@dataclass
class LoadTurn:
    """Orders files loaded side by side (services.ingest keeps several files in flight).

    A file takes its source's merge lock only once the file before it holds its own or is
    done, so files of one source merge and commit in the order given (on equal effective
    times the later file wins, as when they load one after the other); until then it reads
    and stages its batches. It enters its manifest row only once the file before it has
    entered its own, so a file listed twice waits for its first load's manifest row
    instead of taking it first.
    """

    previous: LoadTurn | None = None
    # called once the file's records are read (its rows may still wait for the merge lock)
    read: Callable[[], None] = lambda: None
    entered: threading.Event = field(default_factory=threading.Event)  # manifest row in
    taken: threading.Event = field(default_factory=threading.Event)  # merge lock held

    def done(self) -> None:
        """Loaded, skipped or failed: the next file need not wait for anything."""
        self.entered.set()
        self.taken.set()


def redact_uri(uri: str) -> str:
    """Drop credentials (user:password@) from a URI before it is stored or shown."""
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return uri


def file_fingerprint(uri: str) -> tuple[int, str]:
    """(size in bytes, SHA-256) of the file's raw bytes, read as a stream."""
    digest = hashlib.sha256()
    size = 0
    with smart_open.open(uri, "rb", compression="disable") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class _Batches(RowBatches):
    """Row batches per target; each full batch becomes a job for the writer thread.

    Only the writer thread uses the connection between `__init__` and `finish`, so
    statements never interleave; the reader only builds rows.
    """

    def __init__(
        self, conn: psycopg.Connection, protector: Protector, source: str, turn: LoadTurn
    ) -> None:
        self.conn = conn
        self.turn = turn
        self.protector = protector
        self.source = source
        super().__init__(BATCH_ROWS)  # read at each load: tests set a smaller one
        self.staged: set[str] = set()  # entities with a staging table (writer thread only)
        self.types: dict[str, list[int]] = {}  # COPY column types per table (writer thread)
        self.locked = False  # holds the source's merge lock (writer thread only)
        self.deferred: dict[str, None] = {}  # staged targets waiting for the lock, in order
        self.epoch = 0  # the change epoch this load stamps vault rows with (writer thread)
        fields = vault_fields(protector.policy)
        missing = sorted(set(fields) - set(table_fields(conn)))
        if missing:  # a warehouse older than an edited policy: its schema was not applied
            raise MissingColumnsError(f"vault.contacts has no columns for the fields {missing}")
        self.vault_columns, self.vault_merge = staging_columns(fields), merge_sql(fields)
        conn.execute(staging_ddl(fields))
        conn.execute(
            "create temp table if not exists identity_incoming (like vault.identity_keys)"
            " on commit drop"
        )
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader-writer")
        self.pending: deque[Future[None]] = deque()

    def submit(self, target: str, rows: Batch) -> None:
        """target: an entity (landing), _VAULT, _IDENTITY or _QUARANTINE; rows: the batch's
        rows, or a read worker's binary COPY payload of them."""
        self.pending.append(self.writer.submit(self._write, target, rows))
        while len(self.pending) > PENDING_BATCHES:
            self.pending.popleft().result()  # re-raises a database error here

    def finish(self) -> None:
        """Write what is left, merge what waited for the merge lock, and wait for the
        writer: the connection is the caller's again."""
        self.flush()
        self.pending.append(self.writer.submit(self._merge_deferred))
        while self.pending:
            self.pending.popleft().result()

    def _merge_deferred(self) -> None:
        if not self.locked:
            self._take_merge_lock(wait=True)

    def close(self) -> None:
        """Stop the writer (always, also after an error) before the transaction ends."""
        self.writer.shutdown(wait=True, cancel_futures=True)

    # --- writer thread ---

    def _write(self, target: str, rows: Batch) -> None:
        if not self.locked:
            self._take_merge_lock(wait=False)
        self._stage(target, rows)
        if target == _QUARANTINE:
            return  # COPYed into place: nothing to merge
        if self.locked:
            self._merge(target)
        else:
            self.deferred[target] = None

    def _take_merge_lock(self, wait: bool) -> None:
        """Take the source's merge lock; merge what was staged while another load held it.

        Batch-by-batch upserts lock keys in no global order: two loads of the same source
        (whose natural keys and subjects can overlap) could deadlock, so they merge in turns,
        from their first merge to their commit. Other sources run alongside. A load whose
        source is busy does not wait for its turn: it keeps staging its batches (COPY into
        its own temporary tables, which locks nothing) and merges them all once it has the
        lock, at the latest when its file is read. Merging the staged rows at once keeps the
        outcome of merging them batch by batch: the newest effective time wins, then the
        later row.
        """
        conn = self.conn
        previous = self.turn.previous
        if previous is not None and not previous.taken.is_set():
            if not wait:
                return  # the file before this one has not taken its turn yet
            previous.taken.wait()
        if wait:
            conn.execute(
                "select pg_advisory_xact_lock(%s::int, hashtext(%s))", (MERGE_LOCK, self.source)
            )
        else:
            row = conn.execute(
                "select pg_try_advisory_xact_lock(%s::int, hashtext(%s))",
                (MERGE_LOCK, self.source),
            ).fetchone()
            if not (row and row[0]):
                return
        self.locked = True
        self.turn.taken.set()
        self.epoch = writer_epoch(conn)
        for target in self.deferred:
            self._merge(target)
        self.deferred.clear()

    def _stage(self, target: str, rows: Batch) -> None:
        if target == _QUARANTINE:
            self._copy(_QUARANTINE, QUARANTINE_COLUMNS, rows)
        elif target == _VAULT:
            self._copy(_VAULT, self.vault_columns, rows)
        elif target == _IDENTITY:
            self._copy(_IDENTITY, IDENTITY_COLUMNS, rows)
        else:
            incoming = _incoming(target)
            if target not in self.staged:
                self.conn.execute(
                    f"create temp table if not exists {incoming}"
                    f" (like {landing_table(target)} including defaults) on commit drop"
                )
                self.staged.add(target)
            if incoming not in self.types:  # typed as its landing table, named in errors
                self.types[incoming] = self._landing_types(target)
            self._copy(incoming, self._landing_columns(target), rows)

    def _landing_columns(self, entity: str) -> list[str]:
        return ["file_id", "source", "position", *self.protector.columns(entity)]

    def _landing_types(self, entity: str) -> list[int]:
        # the staging table is created `like` the landing table, with its types
        return _column_types(self.conn, landing_table(entity), self._landing_columns(entity))

    def copy_types(self) -> dict[str, list[int]]:
        """The COPY column types of every target, for a read worker to encode its batches
        with. Called before the first batch: from then on the writer thread has the
        connection."""
        types = {
            _VAULT: _column_types(self.conn, _VAULT, self.vault_columns),
            _IDENTITY: _column_types(self.conn, _IDENTITY, IDENTITY_COLUMNS),
            _QUARANTINE: _column_types(self.conn, _QUARANTINE, QUARANTINE_COLUMNS),
        }
        for entity in self.protector.policy.entities:
            try:
                types[entity] = self._landing_types(entity)
            except MissingColumnsError:
                # A landing table that lacks a column the policy names: the worker sends
                # that entity's rows as they are, and only a file with such records fails,
                # naming the table (_stage), as it does when read in the loading process.
                continue
        return types

    def _merge(self, target: str) -> None:
        """Merge the staged rows of `target` into place and empty its staging table."""
        conn = self.conn
        if target == _VAULT:
            conn.execute(self.vault_merge, (self.epoch,))
            conn.execute(f"truncate {_VAULT}")
        elif target == _IDENTITY:
            conn.execute(
                "insert into vault.identity_keys select * from identity_incoming"
                " on conflict do nothing"
            )
            conn.execute("truncate identity_incoming")
        else:
            _merge_landing(conn, target, self.protector)
            conn.execute(f"truncate {_incoming(target)}")

    def _copy(self, table: str, columns: list[str] | tuple[str, ...], rows: Batch) -> None:
        """COPY in binary format: the rows hold typed values (dates, bytes, numbers), and
        binary needs no text escaping of the ciphertexts, which halves the client's cost of
        the vault's COPY (measured: 352k vault rows 1.45 s of CPU as text, 0.63 s binary),
        CPU the writer would otherwise take from the reading thread under the GIL. A read
        worker's batch arrives encoded already (copy_payload.py) and goes through whole."""
        listed = ", ".join(columns)
        if isinstance(rows, bytes):
            with (
                self.conn.cursor() as cur,
                cur.copy(f"copy {table} ({listed}) from stdin (format binary)") as copy,
            ):
                copy.write(rows)
            return
        types = self.types.get(table)
        if types is None:
            types = self.types[table] = _column_types(self.conn, table, columns)
        with self.conn.cursor() as cur:
            # By type oid, psycopg picks the dumper of its DB-API `Binary` wrapper for bytea,
            # a Python-level call per value; the rows hold plain bytes, which its C dumper
            # takes (~1 us a ciphertext less). The cursor's adapters are its own copy.
            cur.adapters.register_dumper(bytes, _BYTES_BINARY_DUMPER)
            with cur.copy(f"copy {table} ({listed}) from stdin (format binary)") as copy:
                copy.set_types(types)
                write = copy.write_row
                for row in rows:
                    write(row)


def _column_types(
    conn: psycopg.Connection, table: str, columns: list[str] | tuple[str, ...]
) -> list[int]:
    """The type oids of `columns` of `table` (a temp table resolves through the search path)."""
    found = dict(
        conn.execute(
            "select attname, atttypid::int from pg_attribute"
            " where attrelid = %s::regclass and attnum > 0 and not attisdropped",
            (table,),
        ).fetchall()
    )
    missing = [column for column in columns if column not in found]
    if missing:
        raise MissingColumnsError(
            f"{table} has no column {', '.join(missing)} that the field policy names: the"
            " warehouse's tables are behind the policy"
        )
    return [found[column] for column in columns]


def load_file(
    conn: psycopg.Connection,
    *,
    uri: str,
    source: str,
    units: Iterable[InputUnit] | WorkerRead,
    protector: Protector,
    fingerprint: tuple[int, str] | None = None,
    audit_action: str | None = "ingest",
    turn: LoadTurn | None = None,
) -> FileLoadResult:
    """Protect and load every unit of one file; commit once at the end.

    units: the file's input units, or a WorkerRead: a file of at least its min_bytes is then
    parsed and protected in a worker process (connectors/warehouse/read_worker.py).
    fingerprint: (size, sha256) when the caller already knows it (e.g. a quarantine replay,
    whose "file" is one decrypted record); otherwise the URI is read to compute it.
    audit_action: the audit record written in the same transaction as the load, so a crash
    cannot leave a loaded file unaudited (None: the caller audits on its own).
    turn: this file's place among files loaded side by side (see LoadTurn).
    """
    turn = turn or LoadTurn()
    try:
        return _load_file(conn, uri, source, units, protector, fingerprint, audit_action, turn)
    finally:
        turn.done()


def _load_file(
    conn: psycopg.Connection,
    uri: str,
    source: str,
    units: Iterable[InputUnit] | WorkerRead,
    protector: Protector,
    fingerprint: tuple[int, str] | None,
    audit_action: str | None,
    turn: LoadTurn,
) -> FileLoadResult:
    shown_uri = redact_uri(uri)
    result = FileLoadResult(uri=shown_uri, source=source)
    size, sha256 = fingerprint or file_fingerprint(uri)
    if turn.previous is not None:
        turn.previous.entered.wait()
    with conn.transaction():
        # The same file loading on another connection holds this key until it commits:
        # the insert waits for it, then finds the file loaded and skips it.
        inserted = conn.execute(
            "insert into landing.source_files (uri, source, size_bytes, sha256)"
            " values (%s, %s, %s, %s) on conflict (source, sha256) do nothing"
            " returning file_id",
            (shown_uri, source, size, sha256),
        ).fetchone()
        turn.entered.set()
        if inserted is None:
            existing = conn.execute(
                "select file_id, records_read, records_loaded, records_quarantined"
                " from landing.source_files where source = %s and sha256 = %s",
                (source, sha256),
            ).fetchone()
            result.file_id, result.read, result.loaded, result.quarantined = existing
            result.skipped = True
            result.quarantined_by_reason.update(
                dict(
                    conn.execute(
                        "select reason, count(*) from quarantine.records where file_id = %s"
                        " group by reason",
                        (result.file_id,),
                    ).fetchall()
                )
            )
            return result
        file_id = result.file_id = inserted[0]
        batches = _Batches(conn, protector, source, turn)
        try:
            if isinstance(units, WorkerRead) and size >= units.min_bytes:
                read_in_worker(
                    units, protector, file_id, source, result, batches.submit, BATCH_ROWS,
                    shown_uri, batches.copy_types(),
                )  # fmt: skip
            else:
                read = units.reader() if isinstance(units, WorkerRead) else units
                _read_into(batches, protector, file_id, source, read, result)
            turn.read()
            batches.finish()
        finally:
            batches.close()
        conn.execute(
            "update landing.source_files set records_read = %s, records_loaded = %s,"
            " records_quarantined = %s where file_id = %s",
            (result.read, result.loaded, result.quarantined, file_id),
        )
        if audit_action:
            # Last, just before the commit: it takes the audit chain's lock.
            record_audit(conn, audit_action, f"{source}:{shown_uri}", result.read)
    return result


def _read_into(
    batches: _Batches,
    protector: Protector,
    file_id: int,
    source: str,
    units: Iterable[InputUnit],
    result: FileLoadResult,
) -> None:
    """The reading thread: every unit protected into rows, and counted."""
    add = batches.add
    protect = protector.protect
    columns: Callable[[str], list[str]] = protector.columns
    by_entity = result.rows_by_entity
    # A record's vault row: its subject, effective time, then each vault field's ciphertext
    # and key version at the place vault_table.staging_columns gives it (None: no value).
    slots = {f: 2 + 2 * i for i, f in enumerate(vault_fields(protector.policy))}
    empty = [None] * (2 + 2 * len(slots))
    for unit in units:
        result.read += 1
        if isinstance(unit, Rejection):
            add(_QUARANTINE, _quarantine_row(protector, file_id, source, unit))
            result.quarantined += 1
            result.quarantined_by_reason[unit.reason] += 1
            continue
        for record in unit if isinstance(unit, list) else (unit,):
            protected = protect(record)
            entity = record.entity
            get = protected.landing.get
            add(entity, (file_id, source, record.position, *[get(c) for c in columns(entity)]))
            subject = protected.subject_token
            if protected.vault:
                row = empty.copy()
                row[0], row[1] = subject, record.fields.get("effective_at")
                for column_name, key_version, blob in protected.vault:
                    slot = slots[column_name]
                    row[slot], row[slot + 1] = blob, key_version
                add(_VAULT, tuple(row))
            for key_type, key_hash in protected.identity_keys:
                add(_IDENTITY, (subject, key_type, key_hash))
            by_entity[entity] += 1
        result.loaded += 1


def _incoming(entity: str) -> str:
    return f"incoming_{entity}"


def _quarantine_row(protector: Protector, file_id: int, source: str, rejection: Rejection) -> tuple:
    key_version, blob = protector.cipher.encrypt(
        f"quarantine:{file_id}", rejection.position, rejection.payload
    )
    return (
        file_id,
        source,
        rejection.position,
        rejection.entity,
        rejection.reason,
        rejection.message,
        key_version,
        blob,
    )


def _merge_landing(conn: psycopg.Connection, entity: str, protector: Protector) -> None:
    """Move a batch's staged rows into landing: one row per natural key, newest version wins.

    "Newest" is the source's effective time, not arrival order, so a re-delivered old file
    cannot overwrite a later update; on equal times the later row (and so the later batch)
    wins. Rows without a natural key are appended.
    """
    table, incoming = landing_table(entity), _incoming(entity)
    columns = ["file_id", "source", "position", *protector.columns(entity)]
    listed = ", ".join(columns)
    key = ["source", *protector.policy.entities[entity].natural_key]
    if len(key) == 1:
        conn.execute(f"insert into {table} ({listed}) select {listed} from {incoming}")
        return
    keyed = " and ".join(f"{k} is not null" for k in key)
    key_list = ", ".join(key)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    conn.execute(
        f"insert into {table} ({listed})"
        f" select distinct on ({key_list}) {listed} from {incoming} where {keyed}"
        f" order by {key_list}, effective_at desc nulls last, row_id desc"
        f" on conflict ({key_list}) do update set {updates}, loaded_at = now()"
        f" where {table}.effective_at is null or excluded.effective_at >= {table}.effective_at"
    )
    conn.execute(
        f"insert into {table} ({listed}) select {listed} from {incoming} where not ({keyed})"
    )

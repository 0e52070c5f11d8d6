"""Ingest files from any URI: pick the connector, protect in-stream, load by COPY.

PHI is protected before anything is written: connectors parse, the protector tokenizes,
encrypts and generalizes, the loader writes landing/vault/quarantine in one transaction.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from functools import partial
from pathlib import PurePosixPath

import psycopg

from connectors.warehouse import read_worker
from connectors.warehouse.database import sibling_connection
from connectors.warehouse.loader import FileLoadResult, InputUnit, LoadTurn, load_file
from connectors.warehouse.read_worker import ReadWorkers, WorkerRead
from domain.protect import Protector

SOURCES = ("fhir", "hl7", "crm")
# Files read at a time (see ingest_uris). With read workers, each reads on its own core. On
# this 2-core machine two are best: both cores were 94% busy loading FHIR at 100k patients,
# and 3 or 4 took 37.0 and 35.7 s against 34.9 s (HL7: 28.9 and 30.9 s against 28.1 s).
LANES = 2
# Files in flight, each on its own connection: the LANES being read and those read already,
# staging their rows until the file before them has merged and committed (LoadTurn).
FILES_IN_FLIGHT = 4
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".zst", ".xz"}


class UnknownSourceError(ValueError):
    """The source kind of a file could not be told from its name; pass it explicitly."""


def detect_source(uri: str) -> str:
    """fhir | hl7 | crm from the file name (extension, then parent folder name)."""
    path = PurePosixPath(uri.split("?", 1)[0])
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in _COMPRESSION_SUFFIXES]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in (".ndjson", ".json"):
        return "fhir"
    if suffix in (".hl7", ".hl7v2", ".mllp"):
        return "hl7"
    if suffix in (".csv", ".tsv", ".jsonl", ".parquet"):
        return "crm"
    for part in reversed(path.parts[:-1]):
        if part.lower() in SOURCES:
            return part.lower()
    raise UnknownSourceError(f"cannot tell the source kind of {path.name}; pass --source")


def read_units(uri: str, source: str, fhir_mode: str = "fast") -> Iterator[InputUnit]:
    """The connector's output as input units (one per source record)."""
    if source == "fhir":
        from connectors.fhir import read_fhir

        yield from read_fhir(uri, mode=fhir_mode)
    elif source == "hl7":
        from connectors.hl7.reader import read_hl7

        for message in read_hl7(uri):
            yield message.rejection if message.rejection is not None else list(message.records)
    elif source == "crm":
        from connectors.crm import choose_mapping, read_crm

        yield from read_crm(uri, choose_mapping(uri))
    else:
        raise UnknownSourceError(f"unknown source kind {source!r}; expected one of {SOURCES}")


def ingest_uris(
    conn: psycopg.Connection,
    uris: Iterable[str],
    protector: Protector,
    source: str | None = None,
    fhir_mode: str = "fast",
) -> list[FileLoadResult]:
    """Load each file in its own transaction (load_file), LANES files read at a time.

    Each file read is parsed and protected in a read worker process when it is large
    (connectors/warehouse/read_worker.py), so the files read side by side use every core.
    Files of one source merge and commit in the order given (LoadTurn): a file read before
    the one ahead of it has merged stages its rows and waits, on its own connection, while
    the next file is read in its place (up to FILES_IN_FLIGHT files at a time). Reading a
    file only once the one before it had committed left a core idle whenever a short file
    was read beside a long one, and during each file's last merges. The results come back in
    the order given, and the first error is raised once the files beside it have ended; no
    file starts after it. A file whose source kind cannot be told fails the call before any
    file loads.
    """
    files = [(uri, source or detect_source(uri)) for uri in uris]
    with bulk_load_gc():
        if len(files) < 2:
            # A lone file is read in this process: a worker would have no second file to
            # run beside (measured at 100k patients: the CRM export 7.5 s here, 8.3 s in a
            # worker; the HL7 ADT file 13.3 and 13.8 s).
            with prompt_thread_switches():
                return [_load(conn, uri, protector, kind, fhir_mode) for uri, kind in files]
        in_flight = min(FILES_IN_FLIGHT, len(files))
        # One Protector per file in flight: its caches and counters are plain dicts, not
        # shared between threads; the counters are added back to the caller's at the end.
        file_protectors = [_own_copy(protector) for _ in range(in_flight)]
        reading = threading.Semaphore(LANES)
        failed = threading.Event()
        futures: list[Future[FileLoadResult]] = []
        try:
            with (
                ReadWorkers() as workers,
                _more_connections(conn, in_flight - 1) as others,
                ThreadPoolExecutor(
                    max_workers=in_flight, thread_name_prefix="ingest-file"
                ) as loads,
            ):
                connections = [conn, *others]
                previous: LoadTurn | None = None
                for index, (uri, kind) in enumerate(files):
                    if index >= in_flight:
                        # its connection is free (or its error is raised)
                        futures[index - in_flight].result()
                    reading.acquire()  # a file ahead has been read (or has ended)
                    if failed.is_set():
                        break
                    slot = index % in_flight
                    turn = LoadTurn(previous, read=_ReadingSlot(reading))
                    job = connections[slot], uri, file_protectors[slot], kind, fhir_mode
                    futures.append(loads.submit(_load_beside, failed, *job, turn, workers))
                    previous = turn
            return [future.result() for future in futures]
        finally:
            for file_protector in file_protectors:
                protector.unknown_fields.update(file_protector.unknown_fields)
                protector.dropped.update(file_protector.dropped)


class _ReadingSlot:
    """One of ingest_uris' LANES reading slots, held by a file until its reading ends."""

    def __init__(self, slots: threading.Semaphore) -> None:
        self.slots = slots
        self.held = True

    def __call__(self) -> None:
        """Give the slot back (once; the load calls it when reading ends, and at its end)."""
        if self.held:
            self.held = False
            self.slots.release()


def _load_beside(
    failed: threading.Event,
    conn: psycopg.Connection,
    uri: str,
    protector: Protector,
    kind: str,
    fhir_mode: str,
    turn: LoadTurn,
    workers: ReadWorkers,
) -> FileLoadResult:
    """_load as one of several files in flight: a failure is known before its reading slot
    is given back, so ingest_uris starts no file after it."""
    try:
        return _load(conn, uri, protector, kind, fhir_mode, turn, workers)
    except BaseException:
        failed.set()
        raise
    finally:
        turn.read()


def _load(
    conn: psycopg.Connection,
    uri: str,
    protector: Protector,
    kind: str,
    fhir_mode: str,
    turn: LoadTurn | None = None,
    workers: ReadWorkers | None = None,
) -> FileLoadResult:
    # load_file writes the "ingest" audit record inside the file's own transaction. With
    # `workers`, a large file is parsed and protected in a worker process
    # (connectors/warehouse/read_worker.py), so the files in flight use every core.
    reader = partial(read_units, uri, kind, fhir_mode)
    units: Iterable[InputUnit] | WorkerRead = (
        reader()
        if workers is None
        else WorkerRead(reader, read_worker.worker_min_bytes(kind, fhir_mode), workers)
    )
    return load_file(conn, uri=uri, source=kind, units=units, protector=protector, turn=turn)


def _own_copy(protector: Protector) -> Protector:
    return replace(protector, unknown_fields=Counter(), dropped=Counter())


@contextmanager
def _more_connections(conn: psycopg.Connection, count: int) -> Iterator[list[psycopg.Connection]]:
    """`count` more connections to the same database as `conn`, with the same credentials."""
    with ExitStack() as stack:
        yield [stack.enter_context(sibling_connection(conn)) for _ in range(count)]


@contextmanager
def prompt_thread_switches(interval: float = 0.0005) -> Iterator[None]:
    """A shorter GIL switch interval while one file loads (0.5 ms instead of 5 ms).

    The reading thread is pure Python and holds the GIL; the writer thread needs it back
    after each statement and COPY buffer, and by default waits up to 5 ms for it while
    PostgreSQL sits idle. Measured at 100k patients (three runs each): the CRM export, one
    file, 10.3 -> 8.5 s. With two files in flight there are two reading threads, which then
    take the GIL from each other ten times as often: FHIR's nine files went 45.2 -> 50.8 s
    (HL7's four 34.4 -> 33.1 s), so only a lone file gets it.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@contextmanager
def bulk_load_gc(gen0_threshold: int = 50_000) -> Iterator[None]:
    """Fewer, cheaper garbage collections while a bulk load runs.

    A load allocates millions of short-lived objects (parsed records, protected rows); with
    the default gen-0 threshold (700) the collector runs constantly and its older generations
    walk the whole long-lived heap (interpreter, libraries, Dagster): 6-10 µs per record,
    measured, as much as protection itself. Freezing the heap as it is now takes it out of the
    collector's sight; a higher threshold still collects the load's own cycles.
    """
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(gen0_threshold, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()

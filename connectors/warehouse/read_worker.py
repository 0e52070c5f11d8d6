"""Parse and protect a large file in a child process while the loader writes its rows.

Parsing and protection are pure Python: in the loading process they held the GIL against
the writer thread and left the second core to PostgreSQL alone (at 100k patients the FHIR
load spent 35 s of client CPU on one core beside 23 s of PostgreSQL's). A read worker does
that work on its own core and sends the loader full row batches (encoded for COPY, ready to
write: copy_payload.py), in the order the in-process reader would have handed them to the
writer, so the load's outcome is the same.

The worker is a fresh interpreter (`python -m connectors.warehouse.read_worker`), not a
fork: a copy of a loader with threads, connections and Dagster in it could inherit a held
lock, and multiprocessing's spawn and fork server would re-run the caller's main script in
it. It receives the job, the protector (keys included), over a pipe from its parent and
holds no connection: the file's transaction, and so its crash safety, stays with the
loader. services.ingest keeps its workers for all the files of one call (ReadWorkers):
starting an interpreter and importing the connectors costs ~0.7 s of CPU. A worker exits
when its parent goes: its job pipe ends, or its next send fails.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from connectors.warehouse.copy_payload import binary_copy_payload
from connectors.warehouse.row_batches import RowBatches

# Files smaller than this are read in the loading process: a worker's start (~0.7 s of CPU)
# and the trip of every row through a pipe would cost more than the parallelism gives back.
WORKER_MIN_BYTES = 4 << 20
# Strict FHIR validation (one fhir.resources model per resource, ~110 us) is ~5x fast mode's
# reading, and in the loading process it holds the GIL against the writer, so a strict file
# is worth a worker at a fraction of the size. The harness's strict sample (20,000 resources
# in nine files of 0.4-3.5 MB, all validated in the loading process at 4 MB) took 3.05 s,
# 2.6-2.8 with workers from 1 MB, 512 kB or 256 kB alike: the smallest sends them all.
STRICT_FHIR_WORK_FACTOR = 16


def worker_min_bytes(source: str, fhir_mode: str) -> int:
    """The size from which a file of this source and FHIR mode is read in a worker."""
    strict = source == "fhir" and fhir_mode == "strict"
    return WORKER_MIN_BYTES // STRICT_FHIR_WORK_FACTOR if strict else WORKER_MIN_BYTES


_CODE_ROOT = str(Path(__file__).resolve().parents[2])  # the worker imports this same code


class ReadWorkerError(RuntimeError):
    """A read worker died or failed in a way its own exception could not say."""


class _Worker:
    """One worker interpreter: jobs go in through one pipe, messages come out of another."""

    def __init__(self) -> None:
        job_read, job_write = os.pipe()
        out_read, out_write = os.pipe()
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_CODE_ROOT, path) if p)}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(job_read), str(out_write)],
                pass_fds=(job_read, out_write),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            for fd in (job_write, out_read):
                os.close(fd)
            raise
        finally:
            os.close(job_read)
            os.close(out_write)
        self.jobs = Connection(job_write, readable=False)
        self.messages = Connection(out_read, writable=False)

    def stop(self, kill: bool = False) -> None:
        """End the worker: an idle one leaves when its job pipe closes; `kill` for one that
        may be mid-file (its next send would fail, but it could be deep in a record)."""
        self.jobs.close()
        self.messages.close()
        if kill:
            self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ReadWorkers:
    """Idle read workers, kept for the next file of the same ingest (a context manager)."""

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()  # the files in flight take and return workers

    def take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Worker()

    def give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()

    def __enter__(self) -> ReadWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class WorkerRead:
    """The input units of a file, to be read by a worker process when the file is large.

    reader: a picklable callable (a module-level function or a functools.partial of one)
    that returns the file's input units; called in the worker, or in the loading process
    for files under min_bytes. workers: where to take a worker from and return it to
    (None: a worker for this file alone).
    """

    reader: Callable[[], Iterable[Any]]
    min_bytes: int = WORKER_MIN_BYTES
    workers: ReadWorkers | None = None


class _PipeRows(RowBatches):
    """The worker's row batches: each full batch goes to the loader as one message, encoded
    for COPY here (copy_payload.py) so the loading process need not decode and re-encode
    every row."""

    def __init__(self, pipe: Connection, batch_rows: int, types: dict[str, list[int]]) -> None:
        super().__init__(batch_rows)
        self.pipe = pipe
        self.types = types

    def submit(self, target: str, rows: list[tuple]) -> None:
        types = self.types.get(target)  # None: the loader could not type it (see copy_types)
        self.send(("rows", target, rows if types is None else binary_copy_payload(rows, types)))

    def send(self, message: tuple) -> None:
        self.pipe.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _serve(job_fd: int, out_fd: int) -> None:
    """The worker: for each job, read, protect and send every batch, then the counts (or
    the error); until the job pipe ends or the loader stops listening."""
    import gc

    gc.freeze()  # as services.ingest.bulk_load_gc does for the loading process
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    with Connection(job_fd, writable=False) as jobs, Connection(out_fd, readable=False) as out:
        while True:
            try:
                job = jobs.recv_bytes()
            except EOFError:
                return
            try:
                _run(job, out)
            except (BrokenPipeError, ConnectionResetError):
                return  # the loader is gone: nothing to report to


def _run(job: bytes, out: Connection) -> None:
    from connectors.warehouse import loader

    try:
        reader, protector, file_id, source, batch_rows, types = pickle.loads(job)
        sink = _PipeRows(out, batch_rows, types)
        result = loader.FileLoadResult(uri="", source=source)
        loader._read_into(sink, protector, file_id, source, reader(), result)
        sink.flush()
    except (BrokenPipeError, ConnectionResetError):
        raise
    except BaseException as exc:  # every failure goes to the loader, raised there
        try:
            payload = pickle.dumps(("error", exc), protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(payload)  # an exception whose class cannot be rebuilt from its args
        except Exception:
            payload = pickle.dumps(("error", ReadWorkerError(f"{type(exc).__name__}: {exc}")))
        out.send_bytes(payload)
        return
    sink.send(
        (
            "done",
            result.read,
            result.loaded,
            result.quarantined,
            result.rows_by_entity,
            result.quarantined_by_reason,
            protector.unknown_fields,
            protector.dropped,
        )
    )


def read_in_worker(
    units: WorkerRead,
    protector: Any,
    file_id: int,
    source: str,
    result: Any,
    submit: Callable[[str, Any], None],
    batch_rows: int,
    shown_uri: str,
    types: dict[str, list[int]],
) -> None:
    """Run the reading side of a load in a worker; `submit` hands each batch to the writer,
    as a binary COPY payload encoded with `types` (the column type oids of each target;
    a target without them comes as rows).

    Fills `result` (counts) and adds the worker's counters to `protector`'s, like the
    in-process reader. A failure in the worker is raised here, as its own exception when
    it pickles; a failure here (the writer's) stops the worker.
    """
    job = (units.reader, protector, file_id, source, batch_rows, types)
    worker = units.workers.take() if units.workers is not None else _Worker()
    finished = False
    try:
        worker.jobs.send_bytes(pickle.dumps(job, pickle.HIGHEST_PROTOCOL))
        while True:
            try:
                message = pickle.loads(worker.messages.recv_bytes())
            except EOFError:
                raise ReadWorkerError(
                    f"the read worker for {shown_uri} ended without a result"
                    f" (exit code {worker.process.wait()})"
                ) from None
            kind = message[0]
            if kind == "rows":
                submit(message[1], message[2])
            elif kind == "done":
                (
                    result.read,
                    result.loaded,
                    result.quarantined,
                    result.rows_by_entity,
                    result.quarantined_by_reason,
                ) = message[1:6]
                protector.unknown_fields.update(message[6])
                protector.dropped.update(message[7])
                finished = True
                return
            else:
                raise message[1]
    finally:
        if finished and units.workers is not None:
            units.workers.give_back(worker)
        else:
            worker.stop(kill=not finished)


if __name__ == "__main__":
    # Through the imported module, not this __main__ copy: what the worker pickles (its
    # ReadWorkerError) must name a class the loader can find.
    from connectors.warehouse.read_worker import _serve as serve

    serve(int(sys.argv[1]), int(sys.argv[2]))

"""The open output files: per-file buffers that are flushed in chunks, plus record counts.

Renderers append strings to plain lists (cheap); `flush()` joins and encodes each list into one
blob and hands it to a single writer thread. Disk writes release the GIL, so writing overlaps
with generating the next chunk; a bounded queue keeps memory at a few chunks. One thread and a
FIFO queue keep every file's contents in order, so output stays deterministic.
"""

from __future__ import annotations

import csv
import io
import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

from synthetic.crm import HEADER
from synthetic.fhir import RESOURCE_TYPES
from synthetic.hl7 import FILES as HL7_FILES

CRM_PATH = "crm/contacts.csv"
_QUEUE_CHUNKS = 32  # blobs in flight (~14 files per flush): bounds memory to ~2-3 flushes


def fhir_path(rtype: str) -> str:
    return f"fhir/{rtype}.000.ndjson"


def hl7_path(kind: str) -> str:
    return f"hl7/{kind}.hl7"


class _Writer:
    """A background thread that writes (file, bytes) blobs in the order they were queued."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[IO[bytes], bytes] | None] = queue.Queue(_QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="synthetic-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    item[0].write(item[1])
                except BaseException as exc:  # re-raised in the generating thread
                    self._error = exc

    def put(self, f: IO[bytes], blob: bytes) -> None:
        self._check()
        self._queue.put((f, blob))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error


class Sinks:
    """All output files of one run, opened at once; keyed by path relative to out_dir."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        for sub in ("fhir", "hl7", "crm"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        self.fhir: dict[str, list[str]] = {t: [] for t in RESOURCE_TYPES}
        self.hl7: dict[str, list[str]] = {k: [] for k in HL7_FILES}
        self.crm: list[list[str]] = []
        paths = [*map(fhir_path, RESOURCE_TYPES), *map(hl7_path, HL7_FILES), CRM_PATH]
        self._files: dict[str, IO[bytes]] = {}
        for path in paths:
            self._files[path] = (out_dir / path).open("wb")
        self.records: dict[str, int] = dict.fromkeys(paths, 0)
        self.bad: dict[str, int] = dict.fromkeys(paths, 0)
        self.sizes: dict[str, int] = {}
        self._writer = _Writer()
        # RFC 4180: CRLF line ends, quotes only where needed (commas, quotes, line breaks).
        self._csv_text = io.StringIO()
        self._csv = csv.writer(self._csv_text, lineterminator="\r\n")
        self._csv.writerow(HEADER)

    def flush(self) -> None:
        records, files, put = self.records, self._files, self._writer.put
        for t, lines in self.fhir.items():
            if lines:
                path = fhir_path(t)
                records[path] += len(lines)
                put(files[path], "".join(lines).encode())
                lines.clear()
        for k, messages in self.hl7.items():
            if messages:
                path = hl7_path(k)
                records[path] += len(messages)
                put(files[path], "".join(messages).encode())
                messages.clear()
        if self.crm:
            records[CRM_PATH] += len(self.crm)
            self._csv.writerows(self.crm)
            self.crm.clear()
        text = self._csv_text.getvalue()
        if text:
            put(files[CRM_PATH], text.encode())
            self._csv_text.seek(0)
            self._csv_text.truncate()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._writer.close()
            for path, f in self._files.items():
                self.sizes[path] = f.tell()
                f.close()

    def __enter__(self) -> Sinks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

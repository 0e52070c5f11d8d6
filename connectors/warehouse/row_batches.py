"""Rows buffered per target table, handed on a full batch at a time.

The loader's writer queue (loader._Batches) and a read worker's pipe to the loader
(read_worker._PipeRows) batch the same way, so a file's batches reach the writer in the
same order whichever process read it.
"""

from __future__ import annotations


class RowBatches:
    """Buffers rows per target; `submit` receives each full batch, `flush` the rest."""

    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = batch_rows
        self.rows: dict[str, list[tuple]] = {}

    def add(self, target: str, row: tuple) -> None:
        buffer = self.rows.get(target)
        if buffer is None:
            buffer = self.rows[target] = []
        buffer.append(row)
        if len(buffer) >= self.batch_rows:
            self.submit(target, self.rows.pop(target))

    def flush(self) -> None:
        for target in list(self.rows):
            self.submit(target, self.rows.pop(target))

    def submit(self, target: str, rows: list[tuple]) -> None:
        raise NotImplementedError

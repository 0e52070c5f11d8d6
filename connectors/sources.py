"""Open a source URI (local path, file://, s3://, sftp://, https://...) as a byte stream."""

from __future__ import annotations

import os
from typing import IO

import smart_open

# Extensions smart_open decompresses transparently; a local file with one of them cannot be
# handed to a native reader (pyarrow, polars) by path.
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def open_binary(uri: str) -> IO[bytes]:
    """Open `uri` for reading bytes; compression is inferred from the extension (.gz, .zst...).

    Errors from the transport (missing file, denied access) propagate unchanged: they name the
    URI, which is configuration, not record content.
    """
    return smart_open.open(uri, "rb")


def local_path(uri: str) -> str | None:
    """The filesystem path of `uri` if it is an uncompressed local file, else None.

    Native readers are much faster on a path than on a Python file object, so callers take this
    shortcut when they can and fall back to `open_binary` otherwise.
    """
    path = uri[7:] if uri.startswith("file://") else uri
    if "://" in path or path.lower().endswith(_COMPRESSED):
        return None
    return path if os.path.isfile(path) else None


def extension(uri: str) -> str:
    """The format extension of `uri`, lower-cased, without compression suffix (a.csv.gz -> csv)."""
    name = uri.split("?", 1)[0].rsplit("/", 1)[-1].lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.rsplit(".", 1)[-1] if "." in name else ""

"""Encrypted exchange files: AES-256-GCM in authenticated segments under a shared key.

    header  = b"AHX1" || len(key_id) (1 byte) || key_id (ASCII) || nonce_prefix (7 bytes)
    segment = AES-256-GCM(key, nonce = nonce_prefix || counter (4 bytes, big endian)
                                       || last (1 byte: 1 on the final segment, else 0),
                          aad = header, plaintext = up to 64 KiB)

The construction is the STREAM one age uses: each segment authenticates its position and
whether it is the last, and every segment binds the header, so reordering, truncation (at
any point, including a segment boundary), appending and header edits all fail. The key id
names which shared key to use, so keys can be rotated with both sides holding two for a
while. A file is streamed in and out in 64 KiB pieces, whatever its size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"AHX1"
SEGMENT = 64 * 1024
TAG = 16
PREFIX = 7
MAX_SEGMENTS = 2**32


class EnvelopeError(Exception):
    """Wrong key, unknown key id, or a tampered or truncated file (code FILE_DECRYPT_FAILED)."""

    code = "FILE_DECRYPT_FAILED"


def is_envelope(head: bytes) -> bool:
    return head.startswith(MAGIC)


class EnvelopeWriter:
    """Write plaintext in, ciphertext out to `sink`; `close()` writes the final segment."""

    def __init__(self, sink: BinaryIO, key: bytes, key_id: str) -> None:
        if len(key) != 32:
            raise ValueError("the exchange key must be 32 bytes (AES-256)")
        encoded = key_id.encode("ascii")
        if not 0 < len(encoded) < 256:
            raise ValueError("key_id must be 1-255 ASCII characters")
        self._sink, self._aead = sink, AESGCM(key)
        self._prefix = os.urandom(PREFIX)
        self._header = MAGIC + bytes([len(encoded)]) + encoded + self._prefix
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        sink.write(self._header)

    def write(self, data: bytes) -> None:
        self._buffer += data
        # Keep at least one byte back: the final segment must be written by close().
        while len(self._buffer) > SEGMENT:
            self._seal(bytes(self._buffer[:SEGMENT]), last=False)
            del self._buffer[:SEGMENT]

    def close(self) -> None:
        if not self._closed:
            self._seal(bytes(self._buffer), last=True)
            self._closed = True

    def _seal(self, chunk: bytes, last: bool) -> None:
        if self._counter >= MAX_SEGMENTS:
            raise ValueError("file too large for one envelope")
        nonce = self._prefix + self._counter.to_bytes(4, "big") + bytes([last])
        self._sink.write(self._aead.encrypt(nonce, chunk, self._header))
        self._counter += 1

    def __enter__(self) -> EnvelopeWriter:
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        if exc_type is None:
            self.close()


def decrypt_stream(source: BinaryIO, keys: Mapping[str, bytes]) -> Iterator[bytes]:
    """Plaintext pieces of an envelope read from `source`; EnvelopeError on any tampering."""
    magic = source.read(len(MAGIC) + 1)
    if len(magic) != len(MAGIC) + 1 or not magic.startswith(MAGIC):
        raise EnvelopeError("not an encrypted exchange file")
    key_id_bytes = source.read(magic[-1])
    prefix = source.read(PREFIX)
    if len(key_id_bytes) != magic[-1] or len(prefix) != PREFIX:
        raise EnvelopeError("truncated envelope header")
    key = keys.get(key_id_bytes.decode("ascii", "replace"))
    if key is None:
        raise EnvelopeError("the file is encrypted under a key id we do not hold")
    header, aead = magic + key_id_bytes + prefix, AESGCM(key)
    counter = 0
    current = source.read(SEGMENT + TAG)
    while True:
        following = source.read(SEGMENT + TAG) if len(current) == SEGMENT + TAG else b""
        last = not following
        nonce = prefix + counter.to_bytes(4, "big") + bytes([last])
        try:
            yield aead.decrypt(nonce, current, header)
        except InvalidTag:
            raise EnvelopeError("the file failed authentication (wrong key or tampered)") from None
        if last:
            return
        current, counter = following, counter + 1


def iter_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Split decrypted pieces into lines (without their line ends)."""
    for lines in iter_line_blocks(chunks):
        yield from lines


def iter_line_blocks(chunks: Iterator[bytes]) -> Iterator[list[bytes]]:
    """The complete lines of each decrypted piece (without their line ends), as a list per
    piece: bulk readers take them a block at a time, not a Python step per line."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        carriage_returns = b"\r" in rest
        *lines, rest = rest.split(b"\n")
        if lines:
            yield [line.rstrip(b"\r") for line in lines] if carriage_returns else lines
    if rest:
        yield [rest.rstrip(b"\r")]

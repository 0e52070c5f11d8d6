"""Split a byte stream into HL7 v2 messages: CR/LF/CRLF, BOM, MLLP and batch wrappers handled.

The stream is read in chunks and never held whole. Rules:

* Segment separators CR, LF and CRLF are all normalised to CR; empty segments are dropped.
* MLLP framing bytes (0x0b start block, 0x1c end block) are treated as segment separators,
  which strips them whatever the framing looks like (one frame or many, with or without the
  trailing CR).
* A UTF-8 byte order mark at the start of the stream, or at the start of any segment (files
  concatenated with `cat` keep theirs), is removed.
* A message starts at every segment whose first three characters are ``MSH``.
* Batch envelope segments FHS/BHS/BTS/FTS are removed wherever they occur; they are not
  messages and are not counted.
* Non-blank content before the first MSH that is not a batch header becomes one frame with
  ``has_msh=False``: the caller rejects it as HL7_MISSING_MSH, so nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

# LF and the MLLP block bytes all become CR; CRLF is collapsed first so it yields one CR.
_TO_CR = bytes.maketrans(b"\n\x0b\x1c", b"\r\r\r")
_SEPARATORS = (b"\r", b"\n", b"\x0b", b"\x1c")
_BOM = b"\xef\xbb\xbf"
_BOUNDARY = b"\rMSH"
_BATCH_IDS = (b"FHS", b"BHS", b"BTS", b"FTS")
# Anything that makes a message need tidying: an empty segment or a batch envelope segment.
_UNTIDY = re.compile(rb"\r(?:\r|[FB][HT]S)")


class Frame(NamedTuple):
    """One message's bytes (segments joined by CR), or the junk found before the first MSH."""

    data: bytes
    has_msh: bool


def _normalise(raw: bytes) -> bytes:
    """CRLF/LF/MLLP -> CR and drop segment-leading BOMs; `raw` begins at a separator.

    Each rewrite is guarded by a single-byte membership test (memchr speed), so a chunk that
    is already CR-separated costs almost nothing.
    """
    norm = raw
    if b"\n" in norm:
        if b"\r" in norm:
            norm = norm.replace(b"\r\n", b"\r")
        norm = norm.translate(_TO_CR)
    elif b"\x0b" in norm or b"\x1c" in norm:
        norm = norm.translate(_TO_CR)
    if b"\xef" in norm and _BOM in norm:
        norm = norm.replace(b"\r" + _BOM, b"\r")
    return norm


def _is_batch(segment: bytes) -> bool:
    return segment[:3] in _BATCH_IDS


def _message_frame(data: bytes) -> Frame:
    """Tidy one message's bytes: no leading/trailing/empty segments, no batch segments."""
    data = data.strip(b"\r")
    # Written out rather than looped: this runs once per message on the hot path.
    if (
        b"\r\r" in data
        or b"\rFHS" in data
        or b"\rBHS" in data
        or b"\rBTS" in data
        or b"\rFTS" in data
    ):
        data = b"\r".join(s for s in data.split(b"\r") if s and not _is_batch(s))
    return Frame(data, True)


def _preamble_frame(data: bytes) -> Frame | None:
    """Content before the first MSH: blank lines and batch headers are fine, nothing else."""
    junk = [s for s in data.split(b"\r") if s.strip() and not _is_batch(s)]
    if not junk:
        return None
    return Frame(data=b"\r".join(junk), has_msh=False)


class _Splitter:
    """Turns normalised pieces (each starting at a segment separator) into frames."""

    def __init__(self) -> None:
        # Normalised bytes of the message being collected; kept as a list so that a huge
        # message spread over many chunks is joined once instead of re-copied per chunk.
        self._parts: list[bytes] = []
        self._in_message = False  # False until the first MSH: we are in the preamble

    def _close(self, data: bytes) -> Frame | None:
        if self._in_message:
            return _message_frame(data)
        return _preamble_frame(data)

    def feed(self, norm: bytes) -> Iterator[Frame]:
        # A boundary "\rMSH" can never straddle two pieces because every piece starts at a
        # separator and the previous piece ended just before one.
        at = norm.find(_BOUNDARY)
        if at < 0:
            self._parts.append(norm)
            return
        self._parts.append(norm[:at])
        frame = self._close(b"".join(self._parts))
        if frame is not None:
            yield frame
        self._in_message = True
        # One scan per piece decides whether its messages need tidying one by one.
        tidy = _UNTIDY.search(norm, at) is None
        while True:
            nxt = norm.find(_BOUNDARY, at + 1)
            if nxt < 0:
                self._parts = [norm[at:]]
                return
            yield Frame(norm[at + 1 : nxt], True) if tidy else _message_frame(norm[at:nxt])
            at = nxt

    def finish(self) -> Iterator[Frame]:
        frame = self._close(b"".join(self._parts))
        self._parts = []
        if frame is not None and frame.data:
            yield frame


def iter_frames(chunks: Iterable[bytes]) -> Iterator[Frame]:
    """Frames from a stream of byte chunks of any size (1 byte to megabytes)."""
    splitter = _Splitter()
    # Raw bytes not yet normalised. They always begin at a separator (the stream is treated
    # as if it began with one), so CRLF pairs and separator+BOM are never cut in two.
    raw: list[bytes] = [b"\r"]
    for chunk in chunks:
        if not chunk:
            continue
        cut = max(chunk.rfind(sep) for sep in _SEPARATORS)
        if cut < 0:
            raw.append(chunk)
            continue
        raw.append(chunk[:cut])
        yield from splitter.feed(_normalise(b"".join(raw)))
        raw = [chunk[cut:]]
    yield from splitter.feed(_normalise(b"".join(raw)))
    yield from splitter.finish()


def iter_frames_bytes(data: bytes) -> Iterator[Frame]:
    """Frames from bytes already in memory (tests, MLLP payloads)."""
    return iter_frames((data,))

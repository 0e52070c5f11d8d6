"""Read HL7 v2 files from any smart_open URI into per-message results: records or one rejection."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from connectors.hl7 import fastparse
from connectors.hl7.errors import Hl7Error
from connectors.hl7.framing import Frame, iter_frames
from connectors.hl7.mapping import map_message, read_header
from domain.records import Rejection, SourceRecord

DEFAULT_CHUNK = 1 << 20
# A single message beyond this is not a real HL7 message (attachments included); refusing it
# keeps one corrupt file (e.g. a missing segment separator) from producing a giant record.
MAX_MESSAGE_BYTES = 64 << 20
# Control ids and message types only reach positions/attributes when they look like ids, so a
# sender that puts free text there cannot leak it into logs via the position string.
_SAFE_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_SAFE_TYPE = re.compile(r"[A-Z0-9]{1,4}\^[A-Z0-9]{1,4}")


@dataclass(slots=True)
class Hl7Message:
    """The outcome of one message: `records` (never empty) when loaded, else one `rejection`."""

    index: int  # 1-based, counting every message including rejected ones
    position: str  # "message 3 (MSH-10 MSG00003)"; the prefix of every record's position
    control_id: str | None  # MSH-10 when it looks like an id
    message_type: str | None  # "ADT^A04" from MSH-9 when readable
    records: list[SourceRecord] = field(default_factory=list)
    rejection: Rejection | None = None

    @property
    def loaded(self) -> bool:
        return self.rejection is None


@dataclass(slots=True)
class Hl7Tally:
    """Message-level accounting for a load: read == loaded + quarantined, always."""

    read: int = 0
    loaded: int = 0
    quarantined: int = 0
    records: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, message: Hl7Message) -> None:
        self.read += 1
        if message.rejection is None:
            self.loaded += 1
            self.records += len(message.records)
        else:
            self.quarantined += 1
            reason = message.rejection.reason
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


_TYPE_OK: dict[str, bool] = {}


def _safe_type(message_type: str) -> bool:
    """_SAFE_TYPE check, memoised: a feed carries a handful of distinct types."""
    ok = _TYPE_OK.get(message_type)
    if ok is None:
        ok = _SAFE_TYPE.fullmatch(message_type) is not None
        if len(_TYPE_OK) < 1024:
            _TYPE_OK[message_type] = ok
    return ok


def _declared_codec(head: bytes) -> str | None:
    """Python codec for an ISO 8859 charset declared in MSH-18, else None (meaning UTF-8)."""
    line = head.decode("latin-1")
    fields = line.split(line[3]) if len(line) > 3 else []
    charset = fields[17].split("^")[0].strip() if len(fields) > 17 else ""
    if charset.startswith("8859/") and charset[5:].isdigit():
        return f"iso8859-{charset[5:]}"
    return None


def decode_message(data: bytes) -> str:
    """Message bytes -> text: UTF-8 unless MSH-18 declares an ISO 8859 part."""
    end = data.find(b"\r")
    if end < 0:
        end = len(data)
    # Only MSH-18 can declare another charset; look for it without copying the segment.
    codec = _declared_codec(data[:end]) if data.find(b"8859", 0, end) >= 0 else None
    try:
        return data.decode(codec or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise Hl7Error(
            "BAD_ENCODING", "MSH-18", "message bytes do not decode in the declared charset"
        ) from None


def _reject(position: str, err: Hl7Error, payload: bytes) -> Rejection:
    return Rejection(position=position, reason=err.reason, message=err.text, payload=payload)


def process_frame(frame: Frame, index: int) -> Hl7Message:
    """One frame -> records or one rejection; no exception escapes."""
    position = f"message {index}"
    control_id = message_type = None
    try:
        if not frame.has_msh:
            raise Hl7Error("HL7_MISSING_MSH", "MSH", "text before the first MSH segment")
        if len(frame.data) > MAX_MESSAGE_BYTES:
            raise Hl7Error("RECORD_TOO_LARGE", "", "message exceeds the size limit")
        parsed = fastparse.parse(decode_message(frame.data))
        header = read_header(parsed)
        if _SAFE_ID.fullmatch(header.control_id):
            control_id = header.control_id
            position = f"message {index} (MSH-10 {control_id})"
        kind = f"{header.code}^{header.trigger}"
        if _safe_type(kind):
            message_type = kind
        records = map_message(parsed, position, header)
        return Hl7Message(index, position, control_id, message_type, records, None)
    except Hl7Error as err:
        rejection = _reject(position, err, frame.data)
    except Exception as err:  # a bug must quarantine one message, not abort a 1 GB load
        # Only the exception class is reported: its text could quote a value.
        problem = f"internal error ({type(err).__name__}) while reading the message"
        rejection = _reject(position, Hl7Error("HL7_INVALID", "", problem), frame.data)
    return Hl7Message(index, position, control_id, message_type, [], rejection)


def read_hl7_chunks(chunks: Iterable[bytes]) -> Iterator[Hl7Message]:
    """Messages from a stream of byte chunks."""
    for index, frame in enumerate(iter_frames(chunks), start=1):
        yield process_frame(frame, index)


def read_hl7_bytes(data: bytes) -> Iterator[Hl7Message]:
    """Messages from bytes in memory (tests, an MLLP payload)."""
    return read_hl7_chunks((data,))


def read_hl7(
    uri: str, *, chunk_size: int = DEFAULT_CHUNK, transport_params: dict[str, Any] | None = None
) -> Iterator[Hl7Message]:
    """Messages from a local path or any smart_open URI (s3://, sftp://, https://, *.gz).

    The file is streamed in `chunk_size` pieces; memory stays at about one chunk plus the
    largest message, whatever the file size.
    """
    import smart_open  # deferred: its cloud back-ends are slow to import and rarely needed

    with smart_open.open(uri, "rb", transport_params=transport_params) as stream:
        yield from read_hl7_chunks(iter(partial(stream.read, chunk_size), b""))

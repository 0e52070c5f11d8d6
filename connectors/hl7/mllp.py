"""MLLP listener: HL7 v2 messages over TCP, each persisted durably before it is acknowledged.

Wire format (MLLP): 0x0b <message> 0x1c 0x0d per message; the listener answers each frame
with one ACK frame, in order, on the same connection. The decoder is incremental and
tolerant: partial frames across packets, many frames per packet, bytes between frames
(discarded and counted), an end block without its trailing CR, and a start block inside a
frame (the sender gave up on the previous one) are all handled; a frame over
`max_frame_bytes` is drained without being buffered and answered AR RECORD_TOO_LARGE.

The order is the point: `persist(message) -> (ack_code, reason_code)` runs first (in a worker
thread), and only when it returns is the ACK written. If it raises, the connection is closed
with no ACK, so the sender keeps the message and retries; a message is never acknowledged
unless it is on disk. ACKs come from connectors.hl7.ack.build_ack: they echo the routing
header and MSH-10 (MSA-2) and describe errors by reason code only, never by a value.

The default persister, SpoolPersister, is the hub's inbound drop for MLLP feeds: one file per
UTC day, `<spool>/YYYY-MM-DD.hl7`, CR-separated messages that `read_hl7` reads like any other
inbound HL7 file (ingest a day once it is closed: `closed_files()`). It holds PHI exactly like
the inbound folder does (owner-only 0700/0600, to be ingested and then removed by the
operator's retention) and is the only place the listener writes message content; logs carry
peer, ACK code, reason code and counts only. Beside each day file, `YYYY-MM-DD.idx` lists
offset, length, MSH-10 and SHA-256 of every stored message: a message is committed once its
index line is fsynced, which happens after the data is fsynced and before the ACK. On start,
anything past the last committed message (a crash mid-write) is truncated away; the sender
never got an ACK for it and sends it again. A retried message (same MSH-10, same content)
is answered again without being stored twice.

Acknowledgement policy of the default persister (the reader's own verdict decides):
- the message would load -> stored, AA;
- the reader would quarantine it for its content (HL7_MISSING_PID, BAD_DATE...) -> stored (it
  reaches quarantine with its reason at ingest and can be replayed after a fix), AE + reason;
- no usable MSH, unreadable delimiters, a message type the hub does not ingest, or more than
  one message in a frame -> not stored (the hub keeps no PHI it will not use), AR + reason.

Plain MLLP has no encryption: the listener binds to loopback unless given an ssl_context
(MLLP over TLS); put a TLS terminator in front for remote senders.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, NamedTuple

from connectors.hl7.framing import iter_frames_bytes
from connectors.hl7.reader import process_frame

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = 0x0D
DEFAULT_MAX_FRAME_BYTES = 8 << 20
HEAD_BYTES = 4096  # what is kept of an oversized frame: enough for MSH, to address the AR
READ_SIZE = 64 << 10

AckCode = Literal["AA", "AE", "AR"]
Outcome = tuple[AckCode, str | None]
Persister = Callable[[bytes], Outcome]

# Reader verdicts that mean "not a message the hub takes": rejected, not stored.
_REJECT_UNSTORED = frozenset({"HL7_MISSING_MSH", "HL7_BAD_DELIMITERS", "HL7_UNSUPPORTED_TYPE"})
_DAY_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.hl7")


def mllp_frame(payload: bytes) -> bytes:
    """`payload` wrapped in MLLP start/end blocks."""
    return START_BLOCK + payload + END_BLOCK + b"\r"


# --- framing ----------------------------------------------------------------------------------


class Received(NamedTuple):
    """One complete frame's payload (between the start and end blocks)."""

    payload: bytes


class Oversized(NamedTuple):
    """A frame over the limit: its first HEAD_BYTES (to address the AR) and its full size."""

    head: bytes
    size: int


class MllpDecoder:
    """Incremental MLLP frame decoder: `feed(bytes)` returns the frames completed so far."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.garbage_bytes = 0  # outside any frame, or of frames abandoned by the sender
        self._in_frame = False
        self._skip_cr = False  # the CR that normally follows an end block is not garbage
        self._buf = bytearray()
        self._size = 0
        self._oversized = False
        self._head = b""

    @property
    def in_frame(self) -> bool:
        """Whether a frame has started and not ended (bytes a disconnect would lose)."""
        return self._in_frame

    @property
    def pending_bytes(self) -> int:
        return self._size if self._in_frame else 0

    def feed(self, data: bytes) -> list[Received | Oversized]:
        out: list[Received | Oversized] = []
        i, n = 0, len(data)
        while i < n:
            if not self._in_frame:
                if self._skip_cr:
                    self._skip_cr = False
                    if data[i] == CARRIAGE_RETURN:
                        i += 1
                        continue
                start = data.find(START_BLOCK, i)
                if start < 0:
                    self.garbage_bytes += n - i
                    break
                self.garbage_bytes += start - i
                self._begin()
                i = start + 1
                continue
            end = data.find(END_BLOCK, i)
            restart = data.find(START_BLOCK, i, end if end >= 0 else n)
            if restart >= 0:
                # A new start block before the end: the sender abandoned this frame.
                self.garbage_bytes += self._size + (restart - i)
                self._in_frame = False
                i = restart
                continue
            stop = end if end >= 0 else n
            self._append(data[i:stop])
            if end < 0:
                break
            out.append(self._finish())
            i = end + 1
        return out

    def _begin(self) -> None:
        self._in_frame = True
        self._buf.clear()
        self._size = 0
        self._oversized = False
        self._head = b""

    def _append(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._oversized:  # count, keep no more than the head
            if len(self._head) < HEAD_BYTES:
                self._head += piece[: HEAD_BYTES - len(self._head)]
            return
        if self._size > self.max_frame_bytes:
            self._oversized = True
            self._head = bytes((self._buf + piece)[:HEAD_BYTES])
            self._buf.clear()
            return
        self._buf += piece

    def _finish(self) -> Received | Oversized:
        self._in_frame = False
        self._skip_cr = True
        if self._oversized:
            return Oversized(self._head, self._size)
        payload = bytes(self._buf)
        self._buf.clear()
        return Received(payload)


# --- the default persister: a durable spool -----------------------------------------------


class Verdict(NamedTuple):
    code: AckCode
    reason: str | None
    store: bool
    control_id: str  # MSH-10 when it looks like an id, else "-"
    content: bytes  # the message normalised to CR-separated segments


def classify(message: bytes) -> Verdict:
    """What the hub will do with `message`: the reader's own verdict, as an ACK decision."""
    frames = list(iter_frames_bytes(message))
    if not frames or not frames[0].has_msh:
        return Verdict("AR", "HL7_MISSING_MSH", False, "-", b"")
    if len(frames) > 1:
        return Verdict("AR", "HL7_INVALID", False, "-", b"")  # one frame carries one message
    frame = frames[0]
    result = process_frame(frame, 1)
    control_id = result.control_id or "-"
    if result.rejection is None:
        return Verdict("AA", None, True, control_id, frame.data)
    reason = result.rejection.reason
    if reason in _REJECT_UNSTORED:
        return Verdict("AR", reason, False, control_id, frame.data)
    return Verdict("AE", reason, True, control_id, frame.data)


@dataclass
class _DayFile:
    day: str
    data: int  # file descriptors, opened O_APPEND
    index: int
    size: int


class SpoolPersister:
    """Appends accepted messages to per-day spool files with an fsynced index; see module doc."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        dedupe_days: int = 2,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.clock = clock
        self.dedupe_days = dedupe_days
        self.stored = 0
        self.duplicates = 0
        self._lock = threading.Lock()
        self._seen: dict[str, set[tuple[str, str]]] = {}  # day -> {(control id, sha256)}
        self._open: _DayFile | None = None
        self._recover()

    def __call__(self, message: bytes) -> Outcome:
        verdict = classify(message)
        if verdict.store:
            self.store(verdict.control_id, verdict.content)
        return verdict.code, verdict.reason

    def day_file(self, day: str) -> Path:
        return self.folder / f"{day}.hl7"

    def closed_files(self) -> list[Path]:
        """Day files no longer written to (before today, UTC): ready to ingest."""
        today = self._today()
        return sorted(
            p
            for p in self.folder.glob("*.hl7")
            if (m := _DAY_FILE.fullmatch(p.name)) and m.group(1) < today
        )

    def store(self, control_id: str, content: bytes) -> bool:
        """Append `content` durably unless already stored; True when written now."""
        key = (control_id, hashlib.sha256(content).hexdigest())
        with self._lock:
            day = self._today()
            if any(key in keys for keys in self._seen.values()):
                self.duplicates += 1
                return False
            current = self._day(day)
            offset = current.size
            _write_all(current.data, content + b"\r")
            os.fsync(current.data)
            current.size += len(content) + 1
            # The index line is the commit record: written only once the data is on disk.
            line = f"{offset}\t{len(content)}\t{key[0]}\t{key[1]}\n".encode()
            _write_all(current.index, line)
            os.fsync(current.index)
            self._seen.setdefault(day, set()).add(key)
            self.stored += 1
            return True

    def close(self) -> None:
        with self._lock:
            self._close_day()

    # --- internals ------------------------------------------------------------------------

    def _today(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")

    def _day(self, day: str) -> _DayFile:
        if self._open is not None and self._open.day == day:
            return self._open
        self._close_day()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        data = os.open(self.day_file(day), flags, 0o600)
        index = os.open(self.folder / f"{day}.idx", flags, 0o600)
        _fsync_dir(self.folder)  # the new names themselves must survive a crash
        self._open = _DayFile(day, data, index, os.fstat(data).st_size)
        self._forget_before(day)
        return self._open

    def _close_day(self) -> None:
        if self._open is not None:
            os.close(self._open.data)
            os.close(self._open.index)
            self._open = None

    def _forget_before(self, day: str) -> None:
        oldest = (datetime.fromisoformat(day) - timedelta(days=self.dedupe_days - 1)).date()
        for stale in [d for d in self._seen if d < oldest.isoformat()]:
            del self._seen[stale]

    def _recover(self) -> None:
        """Load the dedupe keys and cut every day file back to its last committed message."""
        recent = sorted(
            m.group(1) for p in self.folder.glob("*.hl7") if (m := _DAY_FILE.fullmatch(p.name))
        )
        for day in recent:
            committed, keys = _read_index(self.folder / f"{day}.idx")
            path = self.day_file(day)
            size = path.stat().st_size
            if committed > size:
                raise RuntimeError(f"spool {path.name}: index points past the end of the file")
            if size > committed:
                log.warning(
                    "MLLP spool %s: dropping %d uncommitted bytes (never acknowledged)",
                    path.name,
                    size - committed,
                )
                with path.open("r+b") as fh:
                    fh.truncate(committed)
                    os.fsync(fh.fileno())
            self._seen[day] = keys
        if recent:
            self._forget_before(max(recent[-1], self._today()))


def _read_index(path: Path) -> tuple[int, set[tuple[str, str]]]:
    """(committed end offset, keys) of a day's index; a torn last line is cut off."""
    if not path.exists():
        return 0, set()
    raw = path.read_bytes()
    whole = raw[: raw.rfind(b"\n") + 1]
    if len(whole) != len(raw):
        with path.open("r+b") as fh:
            fh.truncate(len(whole))
            os.fsync(fh.fileno())
    committed, keys = 0, set()
    for line in whole.decode("ascii").splitlines():
        offset, length, control_id, digest = line.split("\t")
        committed = max(committed, int(offset) + int(length) + 1)
        keys.add((control_id, digest))
    return committed, keys


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the listener -----------------------------------------------------------------------------


@dataclass
class ListenerStats:
    """Counts only (no PHI): what an operator or a test checks."""

    connections: int = 0
    frames: int = 0
    acks: dict[str, int] = field(default_factory=dict)  # "AA" / "AE HL7_MISSING_PID" -> n
    garbage_bytes: int = 0
    oversized: int = 0
    persist_failures: int = 0
    dropped_partial_frames: int = 0

    def count_ack(self, code: str, reason: str | None) -> None:
        label = f"{code} {reason}" if reason else code
        self.acks[label] = self.acks.get(label, 0) + 1


class MllpListener:
    """An asyncio MLLP server; `await start()` then `port`, or run via ListenerThread."""

    def __init__(
        self,
        persist: Persister,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        idle_timeout: float = 300.0,
        max_connections: int = 64,
        ssl_context: ssl.SSLContext | None = None,
        workers: int = 4,
    ) -> None:
        if ssl_context is None and not _is_loopback(host):
            raise ValueError(
                "plain MLLP carries PHI in clear text: bind to loopback or pass an ssl_context"
            )
        self.persist = persist
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.stats = ListenerStats()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mllp")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aborted = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, ssl=self.ssl_context, limit=READ_SIZE
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listener on %s:%d", self.host, self.port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop accepting, close connections (frames being persisted finish first)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        self._executor.shutdown(wait=True)

    def abort(self) -> None:
        """Drop every connection at once, sending nothing more (a crash, as senders see it).

        Thread-safe: a persister hook may call it to simulate dying between persist and ACK.
        """
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._abort_now)

    def _abort_now(self) -> None:
        self._aborted = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        peer = _peer(writer)
        if self._aborted or len(self._writers) >= self.max_connections:
            log.warning("MLLP %s: refused (listener busy or stopping)", peer)
            writer.transport.abort()
            return
        self._writers.add(writer)
        self.stats.connections += 1
        decoder = MllpDecoder(self.max_frame_bytes)
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout)
                if not data:
                    break
                for item in decoder.feed(data):
                    ack = await loop.run_in_executor(self._executor, self._answer, item)
                    if ack is None or self._aborted or writer.is_closing():
                        return  # not persisted (or dying): the sender must retry
                    writer.write(mllp_frame(ack))
                    await writer.drain()
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self.stats.garbage_bytes += decoder.garbage_bytes
            if decoder.in_frame:
                self.stats.dropped_partial_frames += 1
                log.info(
                    "MLLP %s: connection ended mid-frame; %d bytes discarded (never acknowledged)",
                    peer,
                    decoder.pending_bytes,
                )
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, item: Received | Oversized) -> bytes | None:
        """The ACK for one frame, after persisting it; None when persisting failed."""
        from connectors.hl7.ack import build_ack  # hl7apy: slow import, listener-only

        self.stats.frames += 1
        if isinstance(item, Oversized):
            self.stats.oversized += 1
            code, reason, text = "AR", "RECORD_TOO_LARGE", _text(item.head)
        else:
            try:
                code, reason = self.persist(item.payload)
            except Exception as exc:  # storage trouble: say nothing, the sender retries
                self.stats.persist_failures += 1
                log.error("MLLP: HL7_SPOOL_FAILED (%s); no ACK sent", type(exc).__name__)
                return None
            text = _text(item.payload)
        self.stats.count_ack(code, reason)
        return build_ack(text, code, reason).encode("utf-8")


def _text(payload: bytes) -> str:
    # Only the header is echoed into the ACK; undecodable bytes must not stop the answer.
    return payload.decode("utf-8", errors="replace")


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unknown peer"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ListenerThread:
    """Runs an MllpListener on its own event loop in a daemon thread (tests, embedding)."""

    def __init__(self, listener: MllpListener) -> None:
        self.listener = listener
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mllp-listener", daemon=True)

    @property
    def port(self) -> int:
        return self.listener.port

    def start(self) -> ListenerThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.listener.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ListenerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.listener.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()


def serve(
    spool: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 2575,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    on_ready: Callable[[str, int], None] | None = None,
) -> ListenerStats:
    """Run a listener with a SpoolPersister until interrupted (the `hub mllp serve` command).

    `on_ready(host, port)` is called once the socket listens (port 0 picks a free port).
    """
    persister = SpoolPersister(spool)
    listener = MllpListener(persister, host=host, port=port, max_frame_bytes=max_frame_bytes)

    async def run() -> None:
        await listener.start()
        if on_ready is not None:
            on_ready(host, listener.port)
        await listener.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        persister.close()
    return listener.stats

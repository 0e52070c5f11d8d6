"""File-exchange adapter: encrypted audience files out, tracking extracts back, over URIs.

The way many enterprise marketing clouds integrate: the hub drops a file per batch into an
outbound folder (`sftp://`, `s3://`, `file://` or a local path, through smart-open) and
picks up the engine's tracking extracts from an inbound folder.

Out: `<outbox>/<audience>/<batch key>.<upsert|remove>.csv.ahx`, a CSV (external_id, email,
then the declared fields; or just external_id for removals) sealed with
connectors/email/envelope.py under the shared key. The name is derived from the batch's
idempotency key, with a `.sha256` sidecar of the content: the same batch retried finds its
file and is not written twice; a different batch under the same key is a conflict.

Back: every extract in the inbox (sorted by name) is read after a cursor
`<file name>|<line>`: CSV or NDJSON, optionally sealed (`.ahx`). Columns: `event_id`
(optional: derived from the content when absent), `event_type` (or inferred from a word in
the file name: sends, opens, clicks, bounces, unsubscribes, complaints),
`external_id` (or `subscriber_key`), `audience_id`, `occurred_at` (ISO 8601), `bounce_type`
(hard|soft), `machine_open`, `url`. An `email` column, if an extract has one, is ignored.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import smart_open

from connectors.email.base import MAX_BATCH, EmailEngine, EngineEvent, EventPage, Member
from connectors.email.base import MemberResult as Result
from connectors.email.envelope import (
    EnvelopeError,
    EnvelopeWriter,
    decrypt_stream,
    is_envelope,
    iter_line_blocks,
    iter_lines,
)
from connectors.email.errors import (
    EngineBatchTooLarge,
    EngineError,
    EngineIdempotencyConflict,
    EngineRequestError,
)
from connectors.email.events import EventBatch, EventRow, RowPage, event_frame
from connectors.email.extract_block import block_events

EXTRACT_SUFFIXES = (".csv", ".ndjson", ".jsonl", ".csv.ahx", ".ndjson.ahx", ".jsonl.ahx")
KIND_BY_NAME = {
    "send": "sent",
    "sent": "sent",
    "deliver": "delivered",
    "open": "open",
    "click": "click",
    "bounce": "bounce",
    "unsub": "unsubscribe",
    "complaint": "complaint",
}
ALIASES = {
    "subscriber_key": "external_id",
    "subscriberkey": "external_id",
    "contact_key": "external_id",
    "event_date": "occurred_at",
    "eventdate": "occurred_at",
    "timestamp": "occurred_at",
    "eventtype": "event_type",
    "type": "event_type",
    "bounce_category": "bounce_type",
    "audience": "audience_id",
}


class FileExchangeError(EngineError):
    code = "FILE_DECRYPT_FAILED"


class FileExchangeEngine(EmailEngine):
    """EmailEngine over exchanged files; `keys` maps key ids to 32-byte shared keys."""

    thread_safe = False
    # Events per readback page (services.feedback): no request to pay for per page, so the
    # per-transaction costs are what the size spreads (1M events: 11.7 s in pages of 20,000,
    # 9.0 s in pages of 100,000).
    events_page_size = 100_000

    def __init__(
        self,
        outbox_uri: str,
        inbox_uri: str,
        keys: Mapping[str, bytes],
        current_key_id: str,
        transport_params: dict[str, Any] | None = None,
    ) -> None:
        for uri in (outbox_uri, inbox_uri):
            if urlsplit(uri).scheme in ("http", "ftp"):
                raise ValueError("exchange folders must be sftp://, s3://, file:// or local")
        if current_key_id not in keys:
            raise ValueError("current_key_id must name one of the keys")
        self.outbox, self.inbox = outbox_uri.rstrip("/"), inbox_uri.rstrip("/")
        self.keys, self.key_id = dict(keys), current_key_id
        self.transport_params = transport_params or {}
        # event_rows: the extract left open at the end of the last page (name, line, reader).
        self._parked: tuple[str, int, Iterator[tuple[int, dict[str, Any] | None]]] | None = None

    # --- out ----------------------------------------------------------------------------

    def ensure_audience(self, audience_id: str, name: str, purpose: str) -> None:
        _check_name(audience_id)  # files carry the audience in their path; nothing to create

    def upsert(self, audience_id: str, members: list[Member], idempotency_key: str) -> list[Result]:
        if len(members) > MAX_BATCH:
            raise EngineBatchTooLarge(f"upsert: at most {MAX_BATCH} members per file")
        fields = sorted({name for m in members for name in m.fields})
        rows = [[m.external_id, m.email, *(m.fields.get(f) or "" for f in fields)] for m in members]
        self._put(audience_id, idempotency_key, "upsert", ["external_id", "email", *fields], rows)
        return [Result(m.external_id, "ok", None) for m in members]

    def remove(
        self, audience_id: str, external_ids: list[str], idempotency_key: str
    ) -> list[Result]:
        if len(external_ids) > MAX_BATCH:
            raise EngineBatchTooLarge(f"remove: at most {MAX_BATCH} ids per file")
        rows = [[e] for e in external_ids]
        self._put(audience_id, idempotency_key, "remove", ["external_id"], rows)
        return [Result(e, "ok", None) for e in external_ids]

    def _put(
        self, audience_id: str, key: str, operation: str, header: list[str], rows: list[list]
    ) -> None:
        _check_name(audience_id)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        plain = text.getvalue().encode()
        digest = hashlib.sha256(plain).hexdigest()
        name = f"{self.outbox}/{audience_id}/{quote(key, safe='')}.{operation}.csv.ahx"
        stored = _read_text(name + ".sha256", self.transport_params)
        if stored is not None:
            if stored.strip() != digest:
                raise EngineIdempotencyConflict(f"{operation}: the batch key names another file")
            return  # the same batch, already delivered
        _mkdirs(name)
        with (
            smart_open.open(name, "wb", transport_params=self.transport_params) as sink,
            EnvelopeWriter(sink, self.keys[self.key_id], self.key_id) as sealed,
        ):
            sealed.write(plain)
        # The sidecar last: a file without its sidecar is rewritten on retry, never skipped.
        with smart_open.open(name + ".sha256", "w", transport_params=self.transport_params) as f:
            f.write(digest + "\n")

    def read_outbox_file(self, uri: str) -> list[dict[str, str]]:
        """Decrypt one outbound file (what the engine side does; for reconciliation)."""
        with smart_open.open(uri, "rb", transport_params=self.transport_params) as source:
            lines = [line.decode() for line in iter_lines(decrypt_stream(source, self.keys))]
        return list(csv.DictReader(lines))

    # --- back -----------------------------------------------------------------------------

    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        after_file, after_line = _parse_cursor(cursor)
        events: list[EngineEvent] = []
        position = cursor or ""
        for name in self._extracts():
            if name < after_file:
                continue
            skip = after_line if name == after_file else 0
            for line_no, event in self._read_extract(name, skip):
                if len(events) >= limit:
                    return EventPage(events, position)
                if event is not None:
                    events.append(event)
                position = f"{name}|{line_no}"
            position = f"{name}|{_END}"  # read to its end: the next page starts after it
        return EventPage(events, position)

    def event_rows(self, cursor: str | None, limit: int = 50_000) -> RowPage:
        """`events` as rows for bulk readback (services.feedback), with the same cursors.

        The extract being read stays open between pages (parked with its position), so a
        large file is decrypted and parsed once, not once per page from its start. Rows
        without an external id or event type count as unmapped.
        """
        after_file, after_line = _parse_cursor(cursor)
        parts: list[EventBatch] = []
        read = unmapped = 0
        position = cursor or ""
        for name in self._extracts():
            if name < after_file:
                continue
            skip = after_line if name == after_file else 0
            if skip >= _END:
                continue
            kind = _kind_from_name(name)
            reader = self._resume(name, skip)
            # Rows up to the page's remaining events, mapped as one block.
            while raws := reader.take(limit - read):
                position = f"{name}|{reader.line_no}"
                events, block_read, block_unmapped = _map_block(raws, kind, name)
                parts.append(events)
                read += block_read
                unmapped += block_unmapped
                if read >= limit:
                    self._parked = (name, reader.line_no, reader)  # the next page goes on here
                    return RowPage(_joined(parts), position, read, unmapped)
            position = f"{name}|{_END}"  # read to its end: the next page starts after it
        return RowPage(_joined(parts), position, read, unmapped)

    def _resume(self, name: str, skip: int) -> _RawRows:
        """The parked reader if it stopped exactly at `skip` of `name`, else a new one."""
        parked, self._parked = self._parked, None
        if parked is not None:
            if parked[:2] == (name, skip):
                return parked[2]
            parked[2].close()
        return _RawRows(self._read_rows(name, skip), skip)

    def _read_rows(self, name: str, skip: int) -> Iterator[list[bytes | dict[str, Any] | None]]:
        """The raw rows after line `skip`, a block at a time, one per line: an NDJSON line as
        it is (mapped a page at a time by _map_block), a CSV row as a dict (None: the header)."""
        uri = f"{self.inbox}/{name}"
        with smart_open.open(uri, "rb", transport_params=self.transport_params) as source:
            head = source.read(4)
            rest = _chain(head, source)
            try:
                chunks = decrypt_stream(rest, self.keys) if is_envelope(head) else _pieces(rest)
                if ".ndjson" in name or ".jsonl" in name:
                    blocks: Iterator[list[Any]] = iter_line_blocks(chunks)
                else:
                    csv_rows = _csv_rows(iter_lines(chunks))
                    blocks = iter(lambda: list(islice(csv_rows, 1000)), [])
                seen = 0
                for block in blocks:
                    seen += len(block)
                    if seen > skip:
                        yield block[max(0, len(block) - (seen - skip)) :]
            except EnvelopeError as exc:
                raise FileExchangeError(f"extract {name}: {exc}") from None

    def _extracts(self) -> list[str]:
        return sorted(n for n in _list(self.inbox) if n.endswith(EXTRACT_SUFFIXES))

    def _read_extract(self, name: str, skip: int) -> Iterator[tuple[int, EngineEvent | None]]:
        """(line number, event or None for a header/blank line) after line `skip`."""
        if skip >= _END:
            return
        uri = f"{self.inbox}/{name}"
        kind = _kind_from_name(name)
        with smart_open.open(uri, "rb", transport_params=self.transport_params) as source:
            head = source.read(4)
            rest = _chain(head, source)
            try:
                chunks = decrypt_stream(rest, self.keys) if is_envelope(head) else _pieces(rest)
                lines = iter_lines(chunks)
                parse = _ndjson_rows if ".ndjson" in name or ".jsonl" in name else _csv_rows
                for line_no, row in enumerate(parse(lines), start=1):
                    if line_no <= skip:
                        continue
                    yield line_no, _extract_event(row, kind, name) if row else None
            except EnvelopeError as exc:
                raise FileExchangeError(f"extract {name}: {exc}") from None


_END = 1 << 62  # a file read to its end


def _parse_cursor(cursor: str | None) -> tuple[str, int]:
    if not cursor:
        return "", 0
    after_file, sep, line = cursor.rpartition("|")
    if not sep or not line.isdigit():
        raise EngineRequestError("events: not a cursor of this adapter")
    return after_file, int(line)


# (event id, type, external id, audience id, occurred_at (aware), the same as ISO text,
# machine open, bounce type, url): what an extract row says, the address left out.
_Fields = tuple[str, str, str, str, dt.datetime, str, bool, str | None, str | None]


def _extract_fields(row: dict[str, Any], kind: str | None, name: str) -> _Fields | None:
    # The address, if an extract carries one, is dropped here and never carried further.
    columns = _columns(tuple(row))
    if columns is not None:  # None: already the canonical names, and no address
        row = {canon: row[key] for key, canon in columns}
    external_id = str(row.get("external_id") or "").strip()
    event_type = str(row.get("event_type") or kind or "").strip().lower()
    event_type = KIND_BY_NAME.get(event_type.rstrip("s"), event_type)
    if not external_id or not event_type:
        return None
    try:
        occurred = dt.datetime.fromisoformat(str(row["occurred_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        raise FileExchangeError(f"extract {name}: a row has no valid occurred_at") from None
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=dt.UTC)
    bounce = str(row.get("bounce_type") or "").lower()
    bounce_type = "hard" if "hard" in bounce else "soft" if bounce else None
    if event_type == "bounce" and bounce_type is None:
        bounce_type = "soft"  # unknown severity: never suppress on a guess
    when = occurred.isoformat()
    event_id = row.get("event_id")
    if not event_id:
        # Derived ids must never change: they make re-reading an extract idempotent.
        identity = "|".join([external_id, event_type, when, str(row.get("url") or "")])
        event_id = "fx:" + hashlib.sha256(identity.encode()).hexdigest()[:32]
    machine = str(row.get("machine_open") or "").lower() in ("1", "true", "yes")
    return (
        str(event_id),
        event_type,
        external_id,
        str(row.get("audience_id") or ""),
        occurred,
        when,
        machine and event_type == "open",
        bounce_type if event_type == "bounce" else None,
        str(row["url"]) if event_type == "click" and row.get("url") else None,
    )


def _extract_event(row: dict[str, Any], kind: str | None, name: str) -> EngineEvent | None:
    fields = _extract_fields(row, kind, name)
    if fields is None:
        return None
    event_id, event_type, external_id, audience_id, occurred, _, machine, bounce, url = fields
    return EngineEvent(
        event_id=event_id,
        type=event_type,
        external_id=external_id,
        audience_id=audience_id,
        occurred_at=occurred.astimezone(dt.UTC),
        machine_open=machine,
        bounce_type=bounce,  # type: ignore[arg-type]
        url=url,
    )


class _RawRows:
    """An extract's raw rows (see `_read_rows`), taken by count across its blocks."""

    def __init__(self, blocks: Iterator[list[Any]], skip: int) -> None:
        self._blocks = blocks
        self._block: list[Any] = []
        self._at = 0  # rows of _block already taken
        self.line_no = skip  # of the last row taken

    def take(self, count: int) -> list[Any]:
        taken: list[Any] = []
        while len(taken) < count:
            if self._at == len(self._block):
                self._block, self._at = next(self._blocks, []), 0
                if not self._block:
                    break
            end = min(len(self._block), self._at + count - len(taken))
            taken.extend(self._block[self._at : end])
            self._at = end
        self.line_no += len(taken)
        return taken

    def close(self) -> None:
        self._blocks.close()  # type: ignore[attr-defined]  # a generator: closes its file


def _joined(parts: list[EventBatch]) -> EventBatch:
    """One batch of the parts of a page: rows stay rows (a page is mostly one part)."""
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(part, list) for part in parts):
        return [row for part in parts for row in part]  # type: ignore[union-attr]
    return event_frame(parts)


def _map_block(raws: list[Any], kind: str | None, name: str) -> tuple[EventBatch, int, int]:
    """(events, events read, unmapped) of raw rows in order (NDJSON lines, or CSV rows with
    None for the header): NDJSON in bulk as a frame when the block takes the common shape
    (extract_block), else row by row; blank lines are not events."""
    if raws and isinstance(raws[0], bytes):
        bulk = block_events(raws, kind, _columns, KIND_BY_NAME)
        if bulk is not None:
            return bulk[0], len(raws), bulk[1]
        raws = [orjson.loads(line) if line.strip() else None for line in raws]
    rows: list[EventRow] = []
    read = 0
    for raw in raws:
        if raw is not None:
            read += 1
            row = _extract_row(raw, kind, name)
            if row is not None:
                rows.append(row)
    return rows, read, read - len(rows)


def _extract_row(row: dict[str, Any], kind: str | None, name: str) -> EventRow | None:
    fields = _extract_fields(row, kind, name)
    if fields is None:
        return None
    event_id, event_type, external_id, audience_id, _, when, machine, bounce, _ = fields
    return (event_id, audience_id or None, external_id, event_type, when, machine, bounce)


@lru_cache(maxsize=64)
def _columns(keys: tuple[str, ...]) -> tuple[tuple[str, str], ...] | None:
    """(column, canonical name) for an extract's columns, the `email` column left out; None
    when every column already has its canonical name and none is left out (the row is used
    as it is: no copy per row)."""
    pairs = []
    for key in keys:
        if key:
            canon = ALIASES.get(key.strip().lower(), key.strip().lower())
            if canon != "email":
                pairs.append((key, canon))
    if len(pairs) == len(keys) and all(key == canon for key, canon in pairs):
        return None
    return tuple(pairs)


def _csv_rows(lines: Iterator[bytes]) -> Iterator[dict[str, Any] | None]:
    reader = csv.DictReader(line.decode("utf-8-sig") for line in lines)
    yield None  # the header line
    yield from reader


def _ndjson_rows(lines: Iterator[bytes]) -> Iterator[dict[str, Any] | None]:
    for line in lines:
        yield orjson.loads(line) if line.strip() else None


def _kind_from_name(name: str) -> str | None:
    words = re.findall(r"[a-z]+", name.rsplit("/", 1)[-1].lower())
    for word in words:
        for stem, kind in KIND_BY_NAME.items():
            if word.startswith(stem):
                return kind
    return None


def _pieces(source: Any) -> Iterator[bytes]:
    while chunk := source.read(1 << 16):
        yield chunk


class _chain(io.RawIOBase):
    """A reader that first returns `head`, then the rest of `source`."""

    def __init__(self, head: bytes, source: Any) -> None:
        self.head, self.source = head, source

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head[:size] if size >= 0 else self.head, b""
            if size >= 0 and len(data) < size:
                data += self.source.read(size - len(data))
            elif size < 0:
                data += self.source.read()
            return data
        return self.source.read(size)

    def readable(self) -> bool:
        return True


def _check_name(audience_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", audience_id) or audience_id.startswith("."):
        raise EngineRequestError("audience_id must match [A-Za-z0-9._-]{1,64}")


def _local(uri: str) -> Path | None:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(parts.path)
    if not parts.scheme:
        return Path(uri)
    return None


def _mkdirs(uri: str) -> None:
    local = _local(uri)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)


def _list(uri: str) -> list[str]:
    """File names directly in a folder URI (local, file://, s3://, sftp://)."""
    local = _local(uri)
    if local is not None:
        return [p.name for p in local.iterdir() if p.is_file()] if local.is_dir() else []
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        import boto3

        prefix = parts.path.lstrip("/").rstrip("/") + "/"
        paginator = boto3.client("s3").get_paginator("list_objects_v2")
        names = []
        for page in paginator.paginate(Bucket=parts.netloc, Prefix=prefix, Delimiter="/"):
            names += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
        return names
    if parts.scheme == "sftp":
        import paramiko

        client = paramiko.SSHClient()
        client.load_system_host_keys()
        # Strict: the exchange host must already be in known_hosts (no trust on first use).
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            parts.hostname or "",
            parts.port or 22,
            username=parts.username,
            password=parts.password,
        )
        try:
            return client.open_sftp().listdir(parts.path or ".")
        finally:
            client.close()
    raise ValueError(f"cannot list {parts.scheme}:// folders")


def _read_text(uri: str, transport_params: dict[str, Any]) -> str | None:
    local = _local(uri)
    if local is not None:
        return local.read_text() if local.exists() else None
    try:
        with smart_open.open(uri, "r", transport_params=transport_params) as handle:
            return handle.read()
    except (OSError, ValueError):
        return None

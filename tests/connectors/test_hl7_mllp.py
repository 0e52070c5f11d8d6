"""MLLP listener over real sockets on 127.0.0.1: persist first, then ACK; nothing stored twice."""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.hl7.mllp import (
    ListenerThread,
    MllpDecoder,
    MllpListener,
    Oversized,
    Received,
    SpoolPersister,
    mllp_frame,
)
from connectors.hl7.reader import read_hl7
from sandbox.tls import ensure_local_ca

DAY = "2025-03-01"
NOON = datetime(2025, 3, 1, 12, tzinfo=UTC).timestamp()
CANARY_NAME = "Zelphine^Quarrington"
CANARY_DOB = "19610203"


def fixed_clock() -> float:
    return NOON


def to_mllp_payload(raw: bytes) -> bytes:
    """A sample file (LF-separated, maybe with a BOM) as an MLLP payload (CR-separated)."""
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r")


@pytest.fixture(scope="module")
def samples(shared_data: Path) -> list[tuple[Path, bytes]]:
    files = sorted((shared_data / "hl7").glob("*.hl7"))
    return [(path, to_mllp_payload(path.read_bytes())) for path in files]


def msh10(payload: bytes) -> str:
    msh = payload.lstrip(b"\xef\xbb\xbf").split(b"\r", 1)[0].decode()
    return msh.split("|")[9]


class Ack:
    """The fields of an ACK the tests look at."""

    def __init__(self, text: str) -> None:
        self.text = text
        segments = {s[:3]: s.split("|") for s in text.split("\r") if s}
        msa = segments["MSA"]
        self.code = msa[1]
        self.control_id = msa[2] if len(msa) > 2 else ""
        err = segments.get("ERR")
        self.reason = err[5].split("^")[0] if err and len(err) > 5 else None


class ConnectionClosed(Exception):
    pass


class Client:
    """A plain MLLP sender: one socket, frames out, ACK frames back."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        self.decoder = MllpDecoder()
        self.pending: list[Received | Oversized] = []

    def send(self, payload: bytes) -> None:
        self.sock.sendall(mllp_frame(payload))

    def ack(self) -> Ack:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionClosed
            self.pending.extend(self.decoder.feed(data))
        frame = self.pending.pop(0)
        assert isinstance(frame, Received)
        return Ack(frame.payload.decode())

    def exchange(self, payload: bytes) -> Ack:
        self.send(payload)
        return self.ack()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def spool(tmp_path: Path) -> SpoolPersister:
    persister = SpoolPersister(tmp_path / "spool", clock=fixed_clock)
    yield persister
    persister.close()


@pytest.fixture
def listen():
    running: list[ListenerThread] = []

    def start(persist, **options) -> ListenerThread:
        thread = ListenerThread(MllpListener(persist, **options)).start()
        running.append(thread)
        return thread

    yield start
    for thread in running:
        thread.stop()


def wait_until(condition, what: str) -> None:
    """Wait for a condition another thread makes true (a bound, not a timing assertion)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


# --- the decoder ------------------------------------------------------------------------------

payloads = st.lists(
    st.binary(max_size=200).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")),
    min_size=1,
    max_size=6,
)
noise = st.binary(max_size=20).map(lambda b: b.replace(b"\x0b", b""))


@settings(max_examples=200, deadline=None)
@given(payloads, st.lists(noise, min_size=7, max_size=7), st.data())
def test_decoder_finds_every_frame_whatever_the_packet_boundaries(frames, gaps, data):
    stream = b"".join(gap + mllp_frame(payload) for gap, payload in zip(gaps, frames, strict=False))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    decoder = MllpDecoder()
    found = [item for piece in pieces for item in decoder.feed(piece)]
    assert found == [Received(p) for p in frames]
    assert not decoder.in_frame


def test_decoder_handles_split_end_blocks_missing_crs_and_abandoned_frames():
    decoder = MllpDecoder()
    assert decoder.feed(b"junk\x0bMSH|one\x1c") == [Received(b"MSH|one")]
    assert decoder.feed(b"\r\x0bMSH|two\x1c\x0bMSH|") == [Received(b"MSH|two")]
    assert decoder.in_frame
    # A new start block inside a frame: the sender gave up on it; the new frame counts.
    assert decoder.feed(b"\x0bMSH|three\x1c\r") == [Received(b"MSH|three")]
    assert decoder.garbage_bytes == len(b"junk") + len(b"MSH|")


def test_decoder_drains_an_oversized_frame_without_keeping_it():
    decoder = MllpDecoder(max_frame_bytes=100)
    header = b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|CTL1|P|2.5\r"
    body = header + b"X" * 10_000
    stream = b"\x0b" + body + b"\x1c\r\x0bMSH|small\x1c\r"
    items = []
    for k in range(0, len(stream), 999):
        items += decoder.feed(stream[k : k + 999])
    assert items == [Oversized(body[:4096], len(body)), Received(b"MSH|small")]
    assert decoder.pending_bytes == 0


# --- the listener with the spool ------------------------------------------------------------


def test_every_sample_is_acknowledged_with_its_control_id_and_the_spool_reads_back_identically(
    samples, spool, listen
):
    listener = listen(spool)
    client = Client(listener.port)
    expected_stored = []
    for path, payload in samples:
        ack = client.exchange(payload)
        [expected] = list(read_hl7(str(path)))
        assert ack.control_id == msh10(payload), path.name
        if expected.rejection is None:
            assert (ack.code, ack.reason) == ("AA", None), path.name
        elif expected.rejection.reason == "HL7_UNSUPPORTED_TYPE":
            assert (ack.code, ack.reason) == ("AR", "HL7_UNSUPPORTED_TYPE"), path.name
        else:
            assert (ack.code, ack.reason) == ("AE", expected.rejection.reason), path.name
        if ack.code != "AR":
            expected_stored.append(expected)
    client.close()

    spooled = list(read_hl7(str(spool.day_file(DAY))))
    assert len(spooled) == len(expected_stored) >= 14  # many share MSH-10 MSG00001: all kept
    for got, want in zip(spooled, expected_stored, strict=True):
        assert got.control_id == want.control_id
        assert got.message_type == want.message_type
        assert len(got.records) == len(want.records)
        assert [r.entity for r in got.records] == [r.entity for r in want.records]
        assert (got.rejection is None) == (want.rejection is None)
    assert stat.S_IMODE(spool.day_file(DAY).stat().st_mode) == 0o600
    assert stat.S_IMODE(spool.folder.stat().st_mode) == 0o700
    assert spool.stored == len(expected_stored)
    assert listener.listener.stats.acks["AA"] == len(expected_stored)


def test_frames_packed_split_and_separated_by_garbage_are_each_acknowledged(samples, spool, listen):
    listener = listen(spool)
    by_name = {path.name: payload for path, payload in samples}
    first, second, third = (
        by_name[n] for n in ("ADT-A01-01.hl7", "SIU-S12-01.hl7", "ORU-R01-01.hl7")
    )
    client = Client(listener.port)
    # Three frames in one write, with noise between them.
    client.sock.sendall(
        b"\r\n"
        + mllp_frame(first)
        + b"noise"
        + mllp_frame(second)
        + b"\x00\xff"
        + mllp_frame(third)
    )
    acks = [client.ack() for _ in range(3)]
    assert [a.control_id for a in acks] == [msh10(first), msh10(second), msh10(third)]
    assert {a.code for a in acks} == {"AA"}
    # One frame in pieces, the end block split from its CR.
    frame = mllp_frame(by_name["VXU-V04-01.hl7"])
    for piece in (frame[:1], frame[1:40], frame[40:-1], frame[-1:]):
        client.sock.sendall(piece)
        time.sleep(0.01)  # give each piece its own packet; no timing is asserted
    assert client.ack().code == "AA"
    client.close()
    wait_until(lambda: listener.listener.stats.garbage_bytes > 0, "connection closed")
    assert listener.listener.stats.garbage_bytes == len(b"\r\nnoise\x00\xff")
    assert spool.stored == 4


def test_oversized_frame_is_rejected_unstored_and_the_connection_stays_usable(
    samples, spool, listen
):
    listener = listen(spool, max_frame_bytes=2000)
    by_name = {path.name: payload for path, payload in samples}
    client = Client(listener.port)
    big = client.exchange(by_name["ADT-A01-01.hl7"])  # 8.5 kB
    assert (big.code, big.reason, big.control_id) == ("AR", "RECORD_TOO_LARGE", "MSG00001")
    small = client.exchange(by_name["ADT-A40-01.hl7"])  # 328 bytes
    assert (small.code, small.control_id) == ("AA", "8919-40")
    client.close()
    assert [m.control_id for m in read_hl7(str(spool.day_file(DAY)))] == ["8919-40"]


def test_frames_that_are_not_one_hl7_message_are_rejected_unstored(samples, spool, listen):
    listener = listen(spool)
    client = Client(listener.port)
    not_hl7 = client.exchange(b"hello, this is not HL7")
    assert (not_hl7.code, not_hl7.reason, not_hl7.control_id) == ("AR", "HL7_MISSING_MSH", "")
    two = samples[0][1] + b"\r" + samples[1][1]
    assert client.exchange(two).reason == "HL7_INVALID"
    client.close()
    assert not spool.day_file(DAY).exists() and spool.stored == 0


def test_message_with_a_content_error_is_stored_for_quarantine_and_answered_ae(
    samples, spool, listen
):
    listener = listen(spool)
    adt = dict((p.name, b) for p, b in samples)["ADT-A04-01.hl7"]
    no_pid = b"\r".join(s for s in adt.split(b"\r") if not s.startswith(b"PID"))
    client = Client(listener.port)
    ack = client.exchange(no_pid)
    client.close()
    assert (ack.code, ack.reason) == ("AE", "HL7_MISSING_PID")
    [stored] = list(read_hl7(str(spool.day_file(DAY))))
    assert stored.rejection is not None and stored.rejection.reason == "HL7_MISSING_PID"


def test_client_disconnecting_mid_frame_stores_nothing_and_others_are_served(
    samples, spool, listen
):
    listener = listen(spool)
    payload = samples[0][1]
    quitter = Client(listener.port)
    quitter.sock.sendall(mllp_frame(payload)[:100])
    quitter.close()
    wait_until(lambda: listener.listener.stats.dropped_partial_frames == 1, "partial frame seen")
    other = Client(listener.port)
    assert other.exchange(samples[2][1]).code == "AA"
    other.close()
    assert spool.stored == 1


def test_concurrent_clients_are_each_acknowledged_and_stored_once(samples, spool, listen):
    listener = listen(spool)
    template = dict((p.name, b) for p, b in samples)["ADT-A08-01.hl7"]
    acks: dict[str, Ack] = {}
    lock = threading.Lock()

    def sender(worker: int) -> None:
        client = Client(listener.port)
        for n in range(5):
            control_id = f"W{worker}N{n}"
            ack = client.exchange(template.replace(b"|MSG00001|", f"|{control_id}|".encode(), 1))
            with lock:
                acks[control_id] = ack
        client.close()

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acks) == 40
    assert all(a.code == "AA" and a.control_id == cid for cid, a in acks.items())
    stored = [m.control_id for m in read_hl7(str(spool.day_file(DAY)))]
    assert sorted(stored) == sorted(acks)


def test_crash_between_persist_and_ack_then_retry_stores_the_message_exactly_once(
    samples, tmp_path, listen
):
    folder = tmp_path / "spool"
    payload = samples[0][1]
    first_life = SpoolPersister(folder, clock=fixed_clock)
    dying: list[MllpListener] = []

    def persist_then_die(message: bytes):
        outcome = first_life(message)  # on disk and committed...
        dying[0].abort()  # ...and the process dies before the ACK leaves
        return outcome

    thread = listen(persist_then_die)
    dying.append(thread.listener)
    client = Client(thread.port)
    client.send(payload)
    with pytest.raises((ConnectionClosed, ConnectionResetError)):
        client.ack()
    client.close()
    thread.stop()
    first_life.close()

    # A new listener on the same spool: the sender retries the unacknowledged message.
    second_life = SpoolPersister(folder, clock=fixed_clock)
    thread = listen(second_life)
    client = Client(thread.port)
    ack = client.exchange(payload)
    client.close()
    assert (ack.code, ack.control_id) == ("AA", msh10(payload))
    assert second_life.duplicates == 1 and second_life.stored == 0
    assert [m.control_id for m in read_hl7(str(folder / f"{DAY}.hl7"))] == [msh10(payload)]
    assert len((folder / f"{DAY}.idx").read_text().splitlines()) == 1
    second_life.close()


def test_a_torn_write_is_cut_back_to_the_last_committed_message(samples, tmp_path):
    folder = tmp_path / "spool"
    persister = SpoolPersister(folder, clock=fixed_clock)
    assert persister(samples[0][1]) == ("AA", None)
    persister.close()
    committed = (folder / f"{DAY}.hl7").stat().st_size
    with (folder / f"{DAY}.hl7").open("ab") as fh:
        fh.write(samples[2][1][:300])  # data written, index line never written: not acked
    with (folder / f"{DAY}.idx").open("ab") as fh:
        fh.write(b"999\t12")  # a torn index line

    reopened = SpoolPersister(folder, clock=fixed_clock)
    assert (folder / f"{DAY}.hl7").stat().st_size == committed
    assert len(list(read_hl7(str(folder / f"{DAY}.hl7")))) == 1
    assert reopened(samples[2][1]) == ("AA", None)  # the retry is stored in full
    assert len(list(read_hl7(str(folder / f"{DAY}.hl7")))) == 2
    reopened.close()


def test_a_failing_persister_gets_no_ack_and_no_phi_reaches_logs_or_acks(
    samples, spool, listen, caplog
):
    caplog.set_level(logging.DEBUG)
    adt = dict((p.name, b) for p, b in samples)["ADT-A01-01.hl7"]
    lines = adt.split(b"\r")
    for i, segment in enumerate(lines):
        if segment.startswith(b"PID"):
            fields = segment.split(b"|")
            fields[5], fields[7] = CANARY_NAME.encode(), CANARY_DOB.encode()
            lines[i] = b"|".join(fields)
    canary = b"\r".join(lines)

    def broken(message: bytes):
        raise OSError(f"disk full while writing {message[:400]!r}")

    failing = listen(broken)
    client = Client(failing.port)
    client.send(canary)
    with pytest.raises((ConnectionClosed, ConnectionResetError)):
        client.ack()
    client.close()
    assert failing.listener.stats.persist_failures == 1

    working = listen(spool)
    client = Client(working.port)
    ack = client.exchange(canary)
    client.close()
    assert ack.code == "AA"
    assert "HL7_SPOOL_FAILED" in caplog.text
    for text in (caplog.text, ack.text):
        assert "Zelphine" not in text and "Quarrington" not in text and CANARY_DOB not in text


def test_plain_mllp_refuses_to_listen_beyond_loopback(spool):
    with pytest.raises(ValueError, match="loopback"):
        MllpListener(spool, host="0.0.0.0")


def test_mllp_over_tls(samples, spool, listen, tmp_path):
    material = ensure_local_ca(tmp_path / "tls")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(material.cert_path, material.key_path)
    listener = listen(spool, ssl_context=server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(material.ca_cert_path))
    client = Client(listener.port, tls=client_ctx)
    assert client.exchange(samples[0][1]).code == "AA"
    client.close()


def test_closed_days_are_listed_for_ingest(samples, tmp_path):
    now = [NOON]
    persister = SpoolPersister(tmp_path / "spool", clock=lambda: now[0])
    persister(samples[0][1])
    assert persister.closed_files() == []
    now[0] += 86_400  # the next day: yesterday's file is complete
    persister(samples[2][1])
    assert [p.name for p in persister.closed_files()] == [f"{DAY}.hl7"]
    persister.close()


def test_hub_mllp_serve_acknowledges_and_spools(samples, tmp_path):
    spool_dir = tmp_path / "spool"
    hub = Path(sys.executable).with_name("hub")
    proc = subprocess.Popen(
        [str(hub), "mllp", "serve", "--port", "0", "--spool", str(spool_dir)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        line = proc.stderr.readline()
        assert "MLLP listening on 127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split(",")[0])
        client = Client(port)
        ack = client.exchange(samples[0][1])
        client.close()
        assert (ack.code, ack.control_id) == ("AA", msh10(samples[0][1]))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    [day_file] = list(spool_dir.glob("*.hl7"))
    assert len(list(read_hl7(str(day_file)))) == 1

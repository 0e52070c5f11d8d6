"""Throughput benchmark: framing + fastparse + mapping vs a naive hl7apy loop, on one core.

Run: .venv/bin/python -m connectors.hl7.bench [--messages 200000] [--apy-messages 2000]

Messages are synthetic v2.5.1 ADT^A04 (MSH, EVN, PID, PV1; CR separated) built in memory,
so no large file is written. The fast path is measured end to end through `read_hl7_chunks`
(chunked framing, decoding, parsing, mapping to SourceRecords); the hl7apy loop only parses.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator

from connectors.hl7.reader import read_hl7_chunks

_GIVEN = ("ADAM", "EVE", "JOHN", "MARY", "LUIS", "ANA", "WEI", "FATIMA")
_FAMILY = ("EVERYMAN", "SMITH", "GARCIA", "NGUYEN", "KHAN", "MULLER", "ROSSI", "KIM")


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment with the given fields at their HL7 positions, empty ones in between."""
    values = [""] * (max(fields) + 1)
    values[0] = name
    for index, value in fields.items():
        values[index] = value
    return "|".join(values)


def adt_a04(i: int, rng: random.Random) -> str:
    """One synthetic v2.5.1 ADT^A04 with PID and PV1, segments separated by CR."""
    sent = f"2024{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 23):02d}3000"
    birth = f"{rng.randint(1930, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    pid = {
        1: "1",
        3: f"{100000 + i}^^^HOSP^MR~{900000000 + i}^^^SSA^SS",
        5: f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}^Q",
        7: birth,
        8: rng.choice("FMOU"),
        11: f"{rng.randint(1, 9999)} MAIN ST^^SPRINGFIELD^IL^62701^USA",
        13: f"^PRN^PH^^1^217^555{i % 10000:04d}~^NET^Internet^p{i}@example.org",
        19: f"{rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
    }
    pv1 = {1: "1", 2: "O", 3: "CLINIC^101^A", 7: "1234^WELBY^MARCUS", 19: f"V{i:08d}", 44: sent}
    return "\r".join(
        (
            f"MSH|^~\\&|REG|HOSP|HUB|AUD|{sent}-0500||ADT^A04^ADT_A01|MSG{i:08d}|P|2.5.1",
            f"EVN|A04|{sent}",
            _segment("PID", pid),
            _segment("PV1", pv1),
        )
    )


def corpus(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [adt_a04(i, rng) for i in range(n)]


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def bench_fast(messages: list[str], chunk: int = 1 << 20) -> tuple[float, int]:
    """(messages per second, records produced) through framing+fastparse+mapping."""
    data = ("\r".join(messages) + "\r").encode()
    started = time.perf_counter()
    loaded = records = 0
    for message in read_hl7_chunks(_chunks(data, chunk)):
        if message.rejection is None:
            loaded += 1
            records += len(message.records)
    elapsed = time.perf_counter() - started
    if loaded != len(messages):
        raise SystemExit(f"only {loaded} of {len(messages)} benchmark messages loaded")
    return len(messages) / elapsed, records


def bench_hl7apy(messages: list[str]) -> float:
    """Messages per second for a plain parse_message loop (no mapping at all)."""
    from hl7apy.consts import VALIDATION_LEVEL  # deferred: the fast path must not need hl7apy
    from hl7apy.parser import parse_message

    started = time.perf_counter()
    for text in messages:
        parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    return len(messages) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--apy-messages", type=int, default=2_000, help="0 skips hl7apy")
    parser.add_argument("--repeat", type=int, default=3, help="best of N fast-path runs")
    args = parser.parse_args()
    messages = corpus(args.messages)
    fast, records = max(bench_fast(messages) for _ in range(args.repeat))
    print(f"fast path : {fast:>10,.0f} msg/s  ({args.messages:,} messages, {records:,} records)")
    if args.apy_messages:
        apy = bench_hl7apy(messages[: args.apy_messages])
        print(f"hl7apy    : {apy:>10,.0f} msg/s  ({args.apy_messages:,} messages, parse only)")
        print(f"ratio     : {fast / apy:>10,.0f}x")


if __name__ == "__main__":
    main()

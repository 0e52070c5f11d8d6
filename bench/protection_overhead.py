"""What in-stream protection adds to ingestion, with the raw crypto it is built on.

    python -m bench.protection_overhead --patients 10000     # prints JSON
    python -m bench.protection_overhead --patients 1000000 --results /tmp/ab.json
    python -m bench.report bench/results.json --add /tmp/ab.json  # into BENCHMARKS.md

One run, one machine: generates a population, then ingests it twice into fresh databases on
an embedded PostgreSQL (read workers off, so protection runs in the measured process) -
once with the real Protector (HMAC tokens, AES-GCM vault), once
with the same Protector code path but crypto replaced by plain string work (same rows, same
COPY) - and measures, in the same process, raw HMAC-SHA256 and AES-256-GCM throughput, the
Tokenizer (first and chained key version) and VaultCipher rates, and the one-time key
unwrap (scrypt passphrase) cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import os
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CALLS = 200_000


@dataclass(frozen=True, slots=True)
class PlainTokenizer:
    """Same interface as Tokenizer, no cryptography: the 'without protection' baseline."""

    version: int = 1

    def token(self, kind: str, value: str) -> str:
        return f"t{self.version}_{kind}:{value}"[:40]

    def subject_token(self, subject_system: str, subject_id: str) -> str:
        return self.token(f"subject:{subject_system}", subject_id)


class PlainCipher:
    current_version = 1

    def encrypt(self, subject_token: str, column: str, plaintext: str | bytes) -> tuple[int, bytes]:
        return 1, plaintext.encode() if isinstance(plaintext, str) else plaintext


def _rate(calls: int, seconds: float) -> float:
    return round(calls / seconds) if seconds else 0.0


def crypto_rates(calls: int = CALLS) -> dict[str, float]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from domain.token_chain import chained_tokenizer
    from domain.tokens import Tokenizer
    from domain.vault_cipher import VaultCipher

    key, key2 = os.urandom(32), os.urandom(32)
    message = b"subject:urn:oid:2.16.840.1.113883.19.5\x1f934141119"
    plaintext = b"keisha.nguyen@example.com"
    aad = b"t1_0123456789abcdef0123456789abcdef\x1femail\x1fv1"
    rates: dict[str, float] = {}

    started = time.perf_counter()
    for _ in range(calls):
        hmac.new(key, message, hashlib.sha256).hexdigest()
    rates["raw HMAC-SHA256 (hmac.new) per s"] = _rate(calls, time.perf_counter() - started)

    aead = AESGCM(key)
    started = time.perf_counter()
    for _ in range(calls):
        aead.encrypt(os.urandom(12), plaintext, aad)
    rates["raw AES-256-GCM encrypt per s"] = _rate(calls, time.perf_counter() - started)

    for label, tokenizer in (
        ("Tokenizer.token (key v1) per s", Tokenizer(key, 1)),
        (
            "ChainedTokenizer.token (key v2, after one rotation) per s",
            chained_tokenizer({1: key, 2: key2}, 2),
        ),
    ):
        started = time.perf_counter()
        for i in range(calls):
            tokenizer.token("mrn", f"HUBHOSP|{i}")
        rates[label] = _rate(calls, time.perf_counter() - started)

    cipher = VaultCipher({1: key}, 1)
    started = time.perf_counter()
    for _ in range(calls):
        cipher.encrypt("t1_0123456789abcdef0123456789abcdef", "email", "keisha.nguyen@example.com")
    rates["VaultCipher.encrypt per s"] = _rate(calls, time.perf_counter() - started)
    return rates


def keyring_costs() -> dict[str, float]:
    """One-time costs a process pays to get its keys (ms)."""
    from domain.keys import KeyringFileProvider
    from domain.master_keys import PassphraseMasterKey, _scrypt

    with tempfile.TemporaryDirectory() as folder:
        provider = KeyringFileProvider(Path(folder) / "keyring.json")
        provider.vault_cipher()
        started = time.perf_counter()
        KeyringFileProvider(Path(folder) / "keyring.json").vault_cipher()
        local = (time.perf_counter() - started) * 1000
        _scrypt.cache_clear()
        started = time.perf_counter()
        PassphraseMasterKey("a passphrase for the benchmark")
        scrypt = (time.perf_counter() - started) * 1000
    return {
        "keys from a local-master keyring (ms)": round(local, 2),
        "scrypt derivation (ms)": round(scrypt, 1),
    }


def ingest_run(patients: int, seed: int) -> dict[str, object]:
    from connectors.warehouse.database import Warehouse
    from connectors.warehouse.embedded import database_options, stop_embedded
    from domain.keys import KeyringFileProvider
    from domain.policy import default_policy
    from domain.protect import Protector
    from services.ingest import ingest_uris
    from synthetic.generate import generate

    @dataclass
    class TimedProtector(Protector):
        # A field, so the copies services.ingest makes for its two file lanes
        # (dataclasses.replace) count into the same tally; a lock, as the lanes are threads.
        tally: Counter = field(default_factory=Counter)
        lock: threading.Lock = field(default_factory=threading.Lock)

        def protect(self, record):  # type: ignore[override]
            started = time.perf_counter()
            protected = Protector.protect(self, record)
            seconds = time.perf_counter() - started
            tokens = len(protected.identity_keys) + sum(
                1 for k, v in protected.landing.items() if v is not None and k.endswith("_token")
            )
            with self.lock:
                self.tally["seconds"] += seconds
                self.tally["records"] += 1
                self.tally["tokens"] += tokens
                self.tally["encryptions"] += len(protected.vault)
            return protected

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        generate(root / "data", patients=patients, seed=seed)
        generated = time.perf_counter() - started
        files = [
            str(p)
            for sub in ("fhir", "hl7", "crm")
            for p in sorted((root / "data" / sub).glob("*"))
            if p.is_file()
        ]
        server = Warehouse(None, root / "state")
        import psycopg

        results: dict[str, dict[str, float]] = {}
        provider = KeyringFileProvider(root / "state" / "keyring.json")
        variants = {
            "without protection (same path, no crypto)": TimedProtector(
                default_policy(),
                PlainTokenizer(),
                PlainCipher(),  # type: ignore[arg-type]
            ),
            "with protection (HMAC tokens, AES-GCM vault)": TimedProtector(
                default_policy(), provider.tokenizer(), provider.vault_cipher()
            ),
        }
        # Read workers off: protection then runs in this process, where the TimedProtector
        # counts it and where its cost lands on the wall clock in full. With workers (the
        # default for several files), it runs beside the writes, so this is the upper case.
        from connectors.warehouse import read_worker

        read_worker.WORKER_MIN_BYTES = 1 << 62
        try:
            for number, (label, protector) in enumerate(variants.items()):
                with psycopg.connect(server.url(), autocommit=True) as conn:
                    (ctype,) = conn.execute(
                        "select datctype from pg_database where datname = 'template1'"
                    ).fetchone()
                    options = database_options(ctype)
                    conn.execute(f"create database bench_protect_{number} {options}")
                url = server.url().replace("/audience_hub?", f"/bench_protect_{number}?")
                warehouse = Warehouse(url, root / "state")
                warehouse.ensure_schema()
                with warehouse.connect() as conn:
                    started = time.perf_counter()
                    loaded = ingest_uris(conn, files, protector)
                    seconds = time.perf_counter() - started
                results[label] = {
                    "ingest seconds": round(seconds, 2),
                    "records": sum(r.read for r in loaded),
                    "records per s": _rate(sum(r.read for r in loaded), seconds),
                    "protect seconds": round(protector.tally["seconds"], 2),
                    "tokens": protector.tally["tokens"],
                    "vault encryptions": protector.tally["encryptions"],
                }
                # Dropped once measured: the two 1M warehouses side by side filled the disk,
                # and the server then has little left to write when it stops (below).
                with psycopg.connect(server.url(), autocommit=True) as conn:
                    conn.execute(f"drop database bench_protect_{number}")
        finally:
            # Stopped before the scratch folder goes: a 1M run once removed it under a
            # server still writing its WAL and failed at its very end, its figures unprinted.
            stop_embedded(root / "state" / "pg")
        base, real = results.values()
        # Wall-clock difference of the two ingests (noisy on a shared machine), and the
        # steadier figure: crypto seconds (protect time with crypto minus without) against
        # the rest of the protected ingest.
        wall = (real["ingest seconds"] - base["ingest seconds"]) / base["ingest seconds"]
        crypto = real["protect seconds"] - base["protect seconds"]
        return {
            "patients": patients,
            "generation seconds": round(generated, 1),
            "ingest": results,
            "crypto seconds inside ingest": round(crypto, 2),
            "protection overhead (crypto time / rest of ingest)": (
                f"{crypto / (real['ingest seconds'] - crypto):.1%}"
            ),
            "protection overhead (wall clock, two ingests)": f"{wall:.1%}",
            "whole protect step share of ingest (policy + crypto)": (
                f"{real['protect seconds'] / real['ingest seconds']:.1%}"
            ),
            "tokens per s inside ingest (protect step, tokens and vault together)": _rate(
                real["tokens"], real["protect seconds"]
            ),
            "vault encryptions per s inside ingest (same timing)": _rate(
                real["vault encryptions"], real["protect seconds"]
            ),
        }


def as_results(report: dict, command: str, started: str, path: Path | None = None):
    """The two ingests as harness figures (ingest.protected against its baseline
    ingest.unprotected), so `python -m bench.report ... --add` shows them in BENCHMARKS.md
    and checks the protection target against them."""
    from bench.results import Results

    results = Results(path=path)
    size = report["ingest"]["patients"]
    results.meta.update({"command": command, "started": started, "sizes": [size],
                         "steps": ["protection_overhead"]})  # fmt: skip
    results.data["notes"]["protection_overhead.crypto"] = report.get("crypto", {})
    without, with_ = report["ingest"]["ingest"].values()
    for key, run in (("ingest.unprotected", without), ("ingest.protected", with_)):
        results.add_run(key, size, {"seconds": run["ingest seconds"], "records": run["records"],
                                    "protect_seconds": run["protect seconds"]})  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--results", type=Path, help="also write the harness's results JSON")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report = {
        "crypto": crypto_rates(args.calls),
        "keys": keyring_costs(),
        "ingest": ingest_run(args.patients, args.seed),
        "cpu": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    if args.results:
        command = "python -m bench.protection_overhead --patients " + str(args.patients)
        as_results(report, command, started, args.results).save()


if __name__ == "__main__":
    main()

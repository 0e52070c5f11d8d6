"""Protection alone (domain.protect.Protector on parsed records) and the raw speed of the
cryptography it is built on, measured in the same run."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter

from bench.measure import StageResult
from bench.stages.files import DataSet

BATCH = 5000  # records parsed (untimed) before each timed protect batch


def _records(data: DataSet) -> Iterator[tuple[str, bool, object]]:
    """(source, starts an input unit, record) for every SourceRecord the three connectors
    produce (rejections are not protected); an HL7 message is one unit of several records."""
    from connectors.crm import choose_mapping, read_crm
    from connectors.fhir import read_fhir
    from connectors.hl7.reader import read_hl7
    from domain.records import SourceRecord

    for name in data.files("fhir"):
        for item in read_fhir(name):
            if isinstance(item, SourceRecord):
                yield "fhir", True, item
    for name in data.files("hl7"):
        for message in read_hl7(name):
            for index, record in enumerate(message.records):
                yield "hl7", index == 0, record
    for name in data.files("crm"):
        for item in read_crm(name, choose_mapping(name)):
            if isinstance(item, SourceRecord):
                yield "crm", True, item


def protector_from(keyring: str):
    from domain.keys import KeyringFileProvider
    from domain.policy import default_policy
    from domain.protect import Protector

    provider = KeyringFileProvider(Path(keyring))
    return Protector(default_policy(), provider.tokenizer(), provider.vault_cipher())


def protect_records(data_root: str, keyring: str) -> StageResult:
    """Protector.protect over every parsed record; only the protect calls are timed."""
    protector = protector_from(keyring)
    protect = protector.protect
    seconds = 0.0
    batch: list[object] = []
    origins: list[tuple[str, bool]] = []  # (source, starts a unit) of each record in batch
    # Per source: input units (resources, messages, rows), HMAC calls and AES-GCM calls, so
    # the report can state each source's cryptographic floor per input unit.
    per_source: dict[str, list[int]] = {}

    def run(batch: list[object], origins: list[tuple[str, bool]]) -> None:
        nonlocal seconds
        started = perf_counter()
        protected = [protect(r) for r in batch]  # type: ignore[arg-type]
        seconds += perf_counter() - started
        for (origin, new_unit), p in zip(origins, protected, strict=True):
            # HMAC calls: every *_token value (the subject's included) and each identity key.
            hmacs = sum(1 for k, v in p.landing.items() if v is not None and k.endswith("_token"))
            hmacs += len(p.identity_keys)
            counts = per_source.setdefault(origin, [0, 0, 0, 0])  # units, HMAC, AES, records
            counts[0] += new_unit
            counts[1] += hmacs
            counts[2] += len(p.vault)
            counts[3] += 1

    for origin, new_unit, record in _records(DataSet(Path(data_root))):
        batch.append(record)
        origins.append((origin, new_unit))
        if len(batch) >= BATCH:
            run(batch, origins)
            batch, origins = [], []
    if batch:
        run(batch, origins)
    records, tokens, encryptions = (sum(c[i] for c in per_source.values()) for i in (3, 1, 2))
    return {
        "figures": {
            "protect.records": {"seconds": seconds, "records": records, "per_source": per_source},
            "protect.tokens": {"seconds": seconds, "records": tokens},
            "protect.vault": {"seconds": seconds, "records": encryptions},
        }
    }


def crypto_limits(calls: int) -> StageResult:
    """Raw HMAC-SHA256 and AES-256-GCM per-call throughput on token- and vault-sized inputs."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as crypto_hmac
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = os.urandom(32)
    message = b"subject:urn:oid:2.16.840.1.113883.19.5\x1f934141119"  # a typical token input
    plaintext = b"keisha.nguyen@example.com"  # a typical vault value
    aad = b"t1_0123456789abcdef0123456789abcdef\x1femail\x1fv1"
    figures: dict[str, StageResult] = {}

    started = perf_counter()
    for _ in range(calls):
        hmac.new(key, message, hashlib.sha256).hexdigest()
    figures["limit.hmac_stdlib"] = {"seconds": perf_counter() - started, "records": calls}

    started = perf_counter()
    for _ in range(calls):
        hmac.digest(key, message, "sha256").hex()
    figures["limit.hmac_digest"] = {"seconds": perf_counter() - started, "records": calls}

    started = perf_counter()
    for _ in range(calls):
        h = crypto_hmac.HMAC(key, hashes.SHA256())
        h.update(message)
        h.finalize()
    figures["limit.hmac_cryptography"] = {"seconds": perf_counter() - started, "records": calls}

    aead = AESGCM(key)
    started = perf_counter()
    for _ in range(calls):
        aead.encrypt(os.urandom(12), plaintext, aad)
    figures["limit.aesgcm"] = {"seconds": perf_counter() - started, "records": calls}
    return {"figures": figures}

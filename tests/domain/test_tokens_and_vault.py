"""Tokens are stable and keyed; vault values round-trip and refuse to move."""

from __future__ import annotations

import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from domain.token_chain import chained_tokenizer
from domain.tokens import Tokenizer
from domain.vault_cipher import (
    NONCE_BLOCK,
    VaultCipher,
    VaultDecryptionError,
    associated_data,
)

KEY = bytes(range(32))


def test_tokens_are_stable_across_instances_and_namespaced():
    first, second = Tokenizer(KEY), Tokenizer(KEY)
    assert first.token("mrn", "123") == second.token("mrn", "123")
    assert first.token("mrn", "123") != first.token("crm", "123")
    assert first.token("mrn", "123").startswith("t1_")


def test_tokens_depend_on_the_key_and_carry_the_version():
    assert Tokenizer(KEY).token("x", "v") != Tokenizer(os.urandom(32)).token("x", "v")
    assert Tokenizer(KEY, version=2).token("x", "v").startswith("t2_")


@given(st.text(max_size=200))
def test_vault_round_trips_any_text(value: str):
    cipher = VaultCipher({1: KEY}, 1)
    version, blob = cipher.encrypt("t1_person", "email", value)
    assert cipher.decrypt("t1_person", "email", version, blob) == value


def test_ciphertext_moved_to_another_person_or_column_fails():
    cipher = VaultCipher({1: KEY}, 1)
    version, blob = cipher.encrypt("t1_alice", "email", "alice@example.org")
    with pytest.raises(VaultDecryptionError):
        cipher.decrypt("t1_bob", "email", version, blob)
    with pytest.raises(VaultDecryptionError):
        cipher.decrypt("t1_alice", "phone", version, blob)


@given(st.integers(min_value=0, max_value=40))
def test_tampered_ciphertext_fails(position: int):
    cipher = VaultCipher({1: KEY}, 1)
    version, blob = cipher.encrypt("t1_alice", "email", "alice@example.org")
    position %= len(blob)
    tampered = blob[:position] + bytes([blob[position] ^ 1]) + blob[position + 1 :]
    with pytest.raises(VaultDecryptionError) as error:
        cipher.decrypt("t1_alice", "email", version, tampered)
    assert "alice" not in str(error.value)


def test_old_key_versions_still_decrypt_after_rotation():
    old = VaultCipher({1: KEY}, 1)
    version, blob = old.encrypt("t1_a", "email", "a@example.org")
    rotated = VaultCipher({1: KEY, 2: os.urandom(32)}, 2)
    assert rotated.decrypt("t1_a", "email", version, blob) == "a@example.org"
    assert rotated.encrypt("t1_a", "email", "x")[0] == 2


# --- the fast paths compute exactly what the stored data was made with ---------------------


def _reference_token(key: bytes, version: int, kind: str, value: str) -> str:
    """The token formula as first shipped (stdlib hmac): stored tokens depend on it."""
    digest = hmac.new(key, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()
    return f"t{version}_{digest[:32]}"


@given(st.text(max_size=40), st.text(max_size=80))
def test_tokens_and_namespaced_tokens_match_the_reference_formula(kind: str, value: str):
    tokenizer = Tokenizer(KEY, 3)
    expected = _reference_token(KEY, 3, kind, value)
    assert tokenizer.token(kind, value) == expected
    assert tokenizer.namespace(kind)(value) == expected


@given(st.text(max_size=40), st.text(max_size=80))
def test_chained_namespaced_tokens_match_the_chain(kind: str, value: str):
    keys = {1: KEY, 2: bytes(range(1, 33)), 3: bytes(range(2, 34))}
    chained = chained_tokenizer(keys, 3)
    first = _reference_token(KEY, 1, kind, value)
    second = _reference_token(keys[2], 2, "rekey", first)
    expected = _reference_token(keys[3], 3, "rekey", second)
    assert chained.token(kind, value) == expected
    assert chained.namespace(kind)(value) == expected
    assert chained.rekey(first) == expected


def test_a_vault_blob_is_nonce_then_aes_gcm_under_the_documented_associated_data():
    cipher = VaultCipher({1: KEY}, 1)
    version, blob = cipher.encrypt("t1_alice", "email", "alice@example.org")
    aad = associated_data("t1_alice", "email", version)
    assert aad == b"t1_alice\x1femail\x1fv1"
    assert AESGCM(KEY).decrypt(blob[:12], blob[12:], aad) == b"alice@example.org"


def test_nonces_never_repeat_across_pool_refills_threads_and_forks():
    cipher = VaultCipher({1: KEY}, 1)
    count = 3 * NONCE_BLOCK + 7  # several refills of the nonce pool

    def nonces(_: object = None) -> list[bytes]:
        return [cipher.encrypt("t1_a", "email", "x")[1][:12] for _ in range(count)]

    with ThreadPoolExecutor(4) as pool:
        seen = [n for batch in pool.map(nonces, range(4)) for n in batch]
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child's nonces must not be the parent's pooled ones
        os.write(writer, b"".join(nonces()))
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        from_child = pipe.read()
    os.waitpid(child, 0)
    seen += [from_child[i : i + 12] for i in range(0, len(from_child), 12)]
    seen += nonces()
    assert len(seen) == 6 * count
    assert len(set(seen)) == len(seen)

"""A cloud KMS / Vault Transit fits behind the master key interface without touching callers."""

from __future__ import annotations

import base64
import json

import pytest

from domain.keys import KeyConfigurationError, KeyringFileProvider, KmsMasterKey
from domain.policy import default_policy
from domain.protect import Protector
from domain.records import SourceRecord
from tests.privacy.kms_double import InMemoryKms


def test_a_keyring_wrapped_by_a_key_service_serves_tokens_and_vault_as_before(tmp_path):
    kms = InMemoryKms()
    provider = KeyringFileProvider(
        tmp_path / "keyring.json", KmsMasterKey(kms, "alias/audience-hub")
    )
    protector = Protector(default_policy(), provider.tokenizer(), provider.vault_cipher())
    record = SourceRecord(
        "patient", "line 1", {"subject_system": "fhir", "subject_id": "p1", "email": "a@b.org"}
    )
    protected = protector.protect(record)
    [(column, version, blob)] = [v for v in protected.vault if v[0] == "email"]
    # A later process, same service: the keyring header names the key, callers pass the client.
    again = KeyringFileProvider(tmp_path / "keyring.json", KmsMasterKey(kms, "alias/audience-hub"))
    assert again.vault_cipher().decrypt(protected.subject_token, column, version, blob) == "a@b.org"
    assert again.tokenizer().token("x", "y") == provider.tokenizer().token("x", "y")
    ring = json.loads((tmp_path / "keyring.json").read_text())
    assert ring["master"] == {"kind": "kms", "key_id": "alias/audience-hub"}
    assert ("decrypt", "alias/audience-hub") in kms.calls
    for key in provider.vault_cipher().keys.values():
        assert base64.b64encode(key).decode() not in json.dumps(ring)


def test_another_key_service_or_a_swapped_context_cannot_unwrap(tmp_path):
    kms = InMemoryKms()
    KeyringFileProvider(
        tmp_path / "keyring.json", KmsMasterKey(kms, "alias/audience-hub")
    ).vault_cipher()
    stranger = KmsMasterKey(InMemoryKms(), "alias/audience-hub")
    with pytest.raises(KeyConfigurationError, match="refused to unwrap") as error:
        KeyringFileProvider(tmp_path / "keyring.json", stranger).vault_cipher()
    assert "KeyServiceError" in str(error.value)
    # A vault key's wrapped blob presented as the token key fails: the context binds it.
    ring = json.loads((tmp_path / "keyring.json").read_text())
    ring["token"]["keys"]["1"] = ring["vault"]["keys"]["1"]
    (tmp_path / "keyring.json").write_text(json.dumps(ring))
    with pytest.raises(KeyConfigurationError):
        KeyringFileProvider(
            tmp_path / "keyring.json", KmsMasterKey(kms, "alias/audience-hub")
        ).tokenizer()


def test_moving_a_local_keyring_into_the_key_service_keeps_every_key(tmp_path):
    local = KeyringFileProvider(tmp_path / "keyring.json")
    keys = local.vault_cipher().keys
    kms = InMemoryKms()
    local.rewrap(KmsMasterKey(kms, "alias/audience-hub"))
    moved = KeyringFileProvider(tmp_path / "keyring.json", KmsMasterKey(kms, "alias/audience-hub"))
    assert moved.vault_cipher().keys == keys
    with pytest.raises(KeyConfigurationError, match="kms"):
        KeyringFileProvider(tmp_path / "keyring.json").vault_cipher()  # no client given

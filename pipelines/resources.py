"""Dagster resources: thin wrappers that hand plain objects to the services.

Settings come through config and EnvVar; nothing is read or started at import time.
"""

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from connectors.warehouse.database import Warehouse, state_dir
from domain.keys import KeyringFileProvider
from domain.policy import FieldPolicy, default_policy, load_policy
from domain.protect import Protector


def _state(folder: str | None) -> Path:
    return Path(folder).resolve() if folder else state_dir()


class WarehouseResource(dg.ConfigurableResource):
    """The PostgreSQL warehouse: DATABASE_URL, or the embedded server under the state folder."""

    database_url: str | None = None
    state_folder: str | None = None

    def warehouse(self) -> Warehouse:
        warehouse = Warehouse(self.database_url or None, _state(self.state_folder))
        warehouse.ensure_schema()
        return warehouse


class PrivacyResource(dg.ConfigurableResource):
    """Keys and the field policy: gives the protector, tokenizer and vault cipher."""

    keyring_path: str | None = None
    policy_path: str | None = None

    def _provider(self) -> KeyringFileProvider:
        path = Path(self.keyring_path) if self.keyring_path else state_dir() / "keyring.json"
        return KeyringFileProvider(path)

    def policy(self) -> FieldPolicy:
        return load_policy(Path(self.policy_path)) if self.policy_path else default_policy()

    def protector(self) -> Protector:
        provider = self._provider()
        return Protector(self.policy(), provider.tokenizer(), provider.vault_cipher())

    def tokenizer(self):
        return self._provider().tokenizer()

    def vault_cipher(self):
        return self._provider().vault_cipher()


class EmailEngineResource(dg.ConfigurableResource):
    """The email engine a sync pushes to and reads events from.

    With no base_url this starts the local SANDBOX engine for the duration of the step
    (state kept under the state folder); give base_url, token and signing_secret (and
    ca_file for a private CA) to talk to a real engine over HTTPS.
    """

    destination: str = "sandbox"
    base_url: str | None = None
    token: str | None = None
    signing_secret: str | None = None
    ca_file: str | None = None
    state_folder: str | None = None

    _sandbox: object | None = PrivateAttr(default=None)

    @property
    def is_sandbox(self) -> bool:
        return not self.base_url

    def engine(self):
        from connectors.email.http_api import HttpEngine

        if self.base_url:
            return HttpEngine(
                self.base_url, self.token or "", self.signing_secret or "", self.ca_file
            )
        if self._sandbox is None:
            from sandbox.engine import SandboxEngine

            self._sandbox = SandboxEngine(_state(self.state_folder) / "sandbox")
            self._sandbox.start()
        sandbox = self._sandbox
        return HttpEngine(
            sandbox.base_url, sandbox.token, sandbox.signing_secret, str(sandbox.ca_cert_path)
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._sandbox is not None:
            self._sandbox.stop()
            self._sandbox = None


class InboundResource(dg.ConfigurableResource):
    """Where file drops arrive: <root>/fhir, <root>/hl7, <root>/crm."""

    root: str | None = None

    def files(self, source: str) -> list[str]:
        root = Path(self.root).resolve() if self.root else state_dir() / "inbound"
        folder = root / source
        if not folder.is_dir():
            return []
        return [str(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name[0] != "."]

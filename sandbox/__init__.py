"""SANDBOX: local stand-ins for external systems, for development and tests only.

Nothing in this package is ever on the production path. The email engine
(`sandbox.engine.SandboxEngine`, `python -m sandbox`) labels itself SANDBOX in its Server
header, in every JSON answer (`"sandbox": true`) and in every log line.
"""

from __future__ import annotations

from sandbox.engine import SandboxEngine, serve
from sandbox.tls import TlsMaterial, ensure_local_ca

__all__ = ["SandboxEngine", "TlsMaterial", "ensure_local_ca", "serve"]

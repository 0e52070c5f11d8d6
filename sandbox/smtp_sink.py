"""SANDBOX SMTP sink: a local aiosmtpd server that accepts mail and keeps it, never relays.

Used as the SANDBOX engine's delivery target and as the relay the SMTP adapter's tests talk
to. By default it offers STARTTLS (certificate from sandbox.tls.ensure_local_ca) and refuses
every command but EHLO/STARTTLS/QUIT before TLS is up; `starttls=False` gives a plaintext-only
server (to prove clients refuse it), `implicit_tls=True` a TLS-on-connect one (port 465
style). `users` turns on AUTH (PLAIN/LOGIN, only over TLS).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from sandbox.tls import TlsMaterial


@dataclass(frozen=True)
class SinkMessage:
    """One accepted message: envelope, raw bytes, and whether it came over TLS."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    over_tls: bool
    authenticated_as: str | None

    def parsed(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = SinkMessage(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            bytes(envelope.original_content or envelope.content),
            session.ssl is not None or self.sink.implicit_tls,  # that port speaks only TLS
            getattr(session, "auth_data", None) and session.auth_data.login.decode(),
        )
        self.sink._accept(message)
        return "250 OK (SANDBOX sink: stored, not relayed)"


class SmtpSink:
    """Start with `with SmtpSink(tls) as sink:`; `sink.port`, `sink.messages`."""

    def __init__(
        self,
        tls: TlsMaterial | None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        starttls: bool = True,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
        folder: str | Path | None = None,
    ) -> None:
        if (starttls or implicit_tls) and tls is None:
            raise ValueError("TLS material is required for STARTTLS or implicit TLS")
        self.host = host
        self.implicit_tls = implicit_tls
        self.port = port or _free_port(host)
        self.users = users or {}
        self.folder = Path(folder) if folder else None
        self.messages: list[SinkMessage] = []
        self._cond = threading.Condition()
        context = None
        if tls is not None and (starttls or implicit_tls):
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(tls.cert_path), str(tls.key_path))
        kwargs: dict[str, Any] = {"hostname": host, "port": self.port}
        if implicit_tls:
            kwargs["ssl_context"] = context
        elif starttls:
            kwargs["tls_context"] = context
            kwargs["require_starttls"] = True
        if self.users:
            kwargs["authenticator"] = self._authenticate
            # aiosmtpd only knows about STARTTLS; on an implicit-TLS port the whole session
            # is already encrypted, so AUTH may be offered from the start.
            kwargs["auth_require_tls"] = not implicit_tls
            kwargs["auth_required"] = True
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without STARTTLS; on an implicit-TLS port it is moot.
            warnings.simplefilter("ignore", UserWarning)
            self._controller = Controller(
                _Handler(self), server_hostname="sandbox-sink.localhost", **kwargs
            )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    def _accept(self, message: SinkMessage) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            name = f"{time.time_ns()}-{len(self.messages)}.eml"
            (self.folder / name).write_bytes(message.data)
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[SinkMessage]:
        """Block until at least `count` messages arrived; returns them all."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]

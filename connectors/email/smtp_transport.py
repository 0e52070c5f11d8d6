"""An SMTP relay connection that is encrypted or nothing: STARTTLS or implicit TLS, verified.

- `starttls` (port 587): after EHLO the server must offer STARTTLS; if it does not, the
  connection is closed and SmtpTlsRequired raised - there is no plaintext fallback, not even
  for a message without PHI.
- `implicit` (port 465): TLS from the first byte.
- Certificates are always verified (system store or the given CA file), host names checked,
  TLS 1.2 at least. AUTH happens only over TLS.

Errors carry a domain.reasons code and the SMTP reply code, never an address or content.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from typing import Literal

Security = Literal["starttls", "implicit"]


class SmtpError(Exception):
    code = "SMTP_UNAVAILABLE"

    def __init__(self, message: str, smtp_code: int | None = None) -> None:
        super().__init__(message)
        self.smtp_code = smtp_code


class SmtpTlsRequired(SmtpError):
    """No STARTTLS offered, or the TLS handshake/certificate failed: nothing was sent."""

    code = "SMTP_TLS_REQUIRED"


class SmtpAuthFailed(SmtpError):
    code = "SMTP_AUTH_FAILED"


class SmtpRejected(SmtpError):
    """5xx for the sender, the recipient or the message: retrying will not help."""

    code = "SMTP_REJECTED"


class SmtpUnavailable(SmtpError):
    """Connection refused or dropped, or a 4xx: retry later."""

    code = "SMTP_UNAVAILABLE"


@dataclass
class RelaySettings:
    host: str
    port: int
    security: Security = "starttls"
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    local_hostname: str | None = None

    def __post_init__(self) -> None:
        if self.security not in ("starttls", "implicit"):
            raise ValueError("security must be 'starttls' or 'implicit'; plaintext is not offered")
        if bool(self.username) != bool(self.password):
            raise ValueError("give both username and password for SMTP AUTH, or neither")

    def __repr__(self) -> str:  # never the password
        return f"RelaySettings({self.host!r}, {self.port}, {self.security!r})"


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)  # CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class SmtpRelay:
    """One authenticated, encrypted session with a relay; reconnects when it drops."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def connect(self) -> None:
        s = self.settings
        context = tls_context(s.ca_file)
        try:
            if s.security == "implicit":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, s.local_hostname, timeout=s.timeout, context=context
                )
                smtp.ehlo()
            else:
                smtp = smtplib.SMTP(s.host, s.port, s.local_hostname, timeout=s.timeout)
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    _quit(smtp)
                    raise SmtpTlsRequired(
                        f"relay {s.host}:{s.port} does not offer STARTTLS; refusing to send "
                        "in plaintext"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()  # capabilities may differ once encrypted (AUTH often appears now)
        except ssl.SSLError as exc:
            raise SmtpTlsRequired(
                f"TLS with relay {s.host}:{s.port} failed ({type(exc).__name__}); nothing sent"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise SmtpTlsRequired(f"relay {s.host}:{s.port} refused STARTTLS") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SmtpUnavailable(
                f"relay {s.host}:{s.port} unreachable ({type(exc).__name__})"
            ) from None
        if s.username:
            try:
                smtp.login(s.username, s.password or "")
            except smtplib.SMTPAuthenticationError as exc:
                _quit(smtp)
                raise SmtpAuthFailed("relay refused the credentials", exc.smtp_code) from None
            except smtplib.SMTPException as exc:
                _quit(smtp)
                raise SmtpAuthFailed(f"AUTH failed ({type(exc).__name__})") from None
        self._smtp = smtp

    @property
    def encrypted(self) -> bool:
        return self._smtp is not None and isinstance(self._smtp.sock, ssl.SSLSocket)

    def send(self, message: bytes, mail_from: str, recipient: str) -> None:
        """Send one message to one recipient over the encrypted session."""
        for attempt in (1, 2):
            if self._smtp is None:
                self.connect()
            assert self._smtp is not None
            if not self.encrypted:  # belt and braces: never write DATA on a clear socket
                self.close()
                raise SmtpTlsRequired("the relay session is not encrypted; nothing sent")
            try:
                self._smtp.sendmail(mail_from, [recipient], message)
                return
            except smtplib.SMTPServerDisconnected:
                self._smtp = None
                if attempt == 2:
                    raise SmtpUnavailable("relay dropped the connection") from None
            except smtplib.SMTPRecipientsRefused as exc:
                code = next(iter(exc.recipients.values()))[0]
                raise _by_code("relay refused the recipient", code) from None
            except smtplib.SMTPResponseException as exc:
                raise _by_code("relay refused the message", exc.smtp_code) from None
            except (OSError, smtplib.SMTPException) as exc:
                self._smtp = None
                raise SmtpUnavailable(f"relay error ({type(exc).__name__})") from None

    def close(self) -> None:
        if self._smtp is not None:
            _quit(self._smtp)
            self._smtp = None


def _by_code(message: str, code: int) -> SmtpError:
    if 400 <= code < 500:
        return SmtpUnavailable(f"{message} ({code}, temporary)", code)
    return SmtpRejected(f"{message} ({code})", code)


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):  # TimeoutError is an OSError
        smtp.close()

"""SANDBOX TLS material: a throwaway local CA and a loopback server certificate.

The sandbox engine speaks real TLS so the adapter's "verification always on" path is exercised
exactly as in production. Clients trust the sandbox by pointing `ca_file` at the CA written
here; nothing is installed into any system trust store, so a client using the default store
refuses the sandbox certificate (which is the point).

Files written into the given folder (keys 0600, certificates 0644):

    sandbox-ca.pem, sandbox-ca.key, sandbox-server.pem, sandbox-server.key

Existing files are reused while they are valid (CA and server cert within their validity
window with a safety margin, server cert issued by the CA, covering the required names,
matching its key). An invalid server cert is re-issued from a still-valid CA so clients that
already hold the CA keep working; an invalid CA regenerates everything.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_CERT = "sandbox-ca.pem"
CA_KEY = "sandbox-ca.key"
SERVER_CERT = "sandbox-server.pem"
SERVER_KEY = "sandbox-server.key"

DNS_NAMES: tuple[str, ...] = ("localhost",)
IP_ADDRESSES: tuple[str, ...] = ("127.0.0.1", "::1")

CA_COMMON_NAME = "audience-hub SANDBOX local CA (not for production)"
CA_LIFETIME = dt.timedelta(days=3650)
SERVER_LIFETIME = dt.timedelta(days=365)
# Re-issue a little before expiry so a long-running sandbox never serves an expired cert.
RENEW_MARGIN = dt.timedelta(days=7)
# Backdate notBefore slightly: clocks on CI runners and containers drift.
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """Paths of the PEM files a server (cert + key) and its clients (CA cert) need."""

    ca_cert_path: Path
    cert_path: Path
    key_path: Path


def ensure_local_ca(directory: str | os.PathLike[str]) -> TlsMaterial:
    """Create (or reuse, when still valid) the SANDBOX CA and a localhost server certificate."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)}
    now = dt.datetime.now(dt.UTC)

    ca = _load_valid_ca(paths[CA_CERT], paths[CA_KEY], now)
    if ca is None:
        log.info("SANDBOX tls: generating a new local CA in %s", folder)
        ca = _new_ca(now)
        _write_key(paths[CA_KEY], ca[1])
        _write_cert(paths[CA_CERT], ca[0])
        server_ok = False
    else:
        server_ok = _server_valid(paths[SERVER_CERT], paths[SERVER_KEY], ca[0], now)

    if not server_ok:
        log.info("SANDBOX tls: issuing a new localhost server certificate in %s", folder)
        cert, key = _new_server_cert(ca[0], ca[1], now)
        _write_key(paths[SERVER_KEY], key)
        _write_cert(paths[SERVER_CERT], cert)

    # Tighten modes on reuse too: a key copied in by hand may carry a looser mode.
    for name in (CA_KEY, SERVER_KEY):
        os.chmod(paths[name], 0o600)
    return TlsMaterial(paths[CA_CERT], paths[SERVER_CERT], paths[SERVER_KEY])


# --- validation -------------------------------------------------------------------------------


def _load_valid_ca(
    cert_path: Path, key_path: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if not _in_window(cert, now) or cert.public_key() != key.public_key():
        return None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    return (cert, key) if constraints.ca else None


def _server_valid(
    cert_path: Path, key_path: Path, ca_cert: x509.Certificate, now: dt.datetime
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    names = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return (
        _in_window(cert, now)
        and cert.public_key() == key.public_key()
        and set(DNS_NAMES) <= names
        and {str(ipaddress.ip_address(ip)) for ip in IP_ADDRESSES} <= ips
    )


def _in_window(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now and now + RENEW_MARGIN < cert.not_valid_after_utc


# --- issuance ---------------------------------------------------------------------------------


def _new_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "audience-hub SANDBOX"),
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        # path_length=0: this CA may only sign leaf certificates, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_server_cert(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in DNS_NAMES]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in IP_ADDRESSES]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "audience-hub SANDBOX"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # Strict verifiers (Python 3.13's VERIFY_X509_STRICT) require the AKI on leaves.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


# --- files ------------------------------------------------------------------------------------


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # sandbox only: the server must start unattended
    )
    _atomic_write(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _atomic_write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    # Create the temp file with its final mode so a key is never world-readable, not even
    # briefly; rename so a crash never leaves a half-written PEM that later fails to parse.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)  # umask may have narrowed or the file pre-existed
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

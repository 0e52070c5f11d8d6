"""Compact JWS signing (RS384, ES384) and JWK export with `cryptography` only.

SMART Backend Services requires RS384 or ES384 client assertions. ES384 signatures travel as
the raw 96-byte r||s concatenation (RFC 7518 §3.4), not the DER that `cryptography` returns.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

Algorithm = Literal["RS384", "ES384"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_ES384_SIZE = 48  # bytes per coordinate / signature half on P-384
MIN_RSA_BITS = 2048


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64url(value: int, size: int | None = None) -> str:
    length = size or max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(length, "big"))


def load_private_key(pem: bytes, password: bytes | None = None) -> PrivateKey:
    """A PEM private key usable for SMART assertions (RSA >= 2048 bits or EC P-384)."""
    key = serialization.load_pem_private_key(pem, password=password)
    algorithm_for(key)  # raises for unusable key types
    return key  # type: ignore[return-value]


def algorithm_for(key: Any) -> Algorithm:
    """RS384 for an RSA key, ES384 for a P-384 key; anything else is refused."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise ValueError("EC keys must be on P-384 for ES384")
        return "ES384"
    raise ValueError("the key must be an RSA or EC P-384 private key")


def public_jwk(key: PrivateKey, kid: str | None = None) -> dict[str, str]:
    """The public half as a JWK (what the client registers with the FHIR server's JWKS)."""
    alg = algorithm_for(key)
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        jwk = {"kty": "RSA", "e": _int_b64url(numbers.e), "n": _int_b64url(numbers.n)}
    else:
        point = key.public_key().public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-384",
            "x": _int_b64url(point.x, _ES384_SIZE),
            "y": _int_b64url(point.y, _ES384_SIZE),
        }
    return {**jwk, "alg": alg, "use": "sig", "kid": kid or jwk_thumbprint(jwk)}


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order."""
    members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = orjson.dumps({name: jwk[name] for name in members}, option=orjson.OPT_SORT_KEYS)
    return b64url(hashlib.sha256(canonical).digest())


def sign_compact(header: dict[str, Any], claims: dict[str, Any], key: PrivateKey) -> str:
    """header.claims.signature, each base64url; `header["alg"]` must match the key."""
    if header.get("alg") != algorithm_for(key):
        raise ValueError("the header alg does not match the key type")
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA384())
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA384())))
        signature = r.to_bytes(_ES384_SIZE, "big") + s.to_bytes(_ES384_SIZE, "big")
    return f"{signing_input.decode()}.{b64url(signature)}"

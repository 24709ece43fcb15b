"""Lean compact JWS (RFC 7515) with algorithms pinned per key, never taken from the header.

Only what Tether needs: sign with Ed25519 ("EdDSA"); verify EdDSA, ES256 and RS256 (the last
two for agents' P-256 keys and external identity providers). `alg: none`, HMAC and any
algorithm other than the key's own are refused before a signature is looked at.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

#: the algorithm each key type may use; HS*/none are not representable on purpose
KEY_ALGS = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256", ("RSA", None): "RS256"}
MAX_TOKEN_BYTES = 16_384
#: RFC 9864's fully-specified name for the same algorithm on the same key type (not a second algorithm)
ALG_ALIASES = {"Ed25519": "EdDSA"}


class JoseError(ValueError):
    """Malformed or unverifiable JWS; the message is safe to show (no token content)."""


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(data: str) -> bytes:
    if "=" in data:
        raise JoseError("padding in base64url")
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (ValueError, TypeError) as exc:
        raise JoseError("bad base64url") from exc


PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A pre-built public key and the one algorithm it verifies."""

    kid: str
    alg: str
    key: PublicKey

    def verify(self, signature: bytes, signing_input: bytes) -> bool:
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, signing_input)
            elif isinstance(self.key, ec.EllipticCurvePublicKey):
                if len(signature) != 64:
                    return False
                r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                self.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
            else:
                self.key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def verify_key_from_jwk(jwk: dict[str, Any]) -> VerifyKey:
    """Build the key object once; the algorithm comes from the key type (and must match `alg` if set)."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    alg = KEY_ALGS.get((str(kty), crv if kty != "RSA" else None))
    if alg is None:
        raise JoseError(f"unsupported key type {kty!r}/{crv!r}")
    if jwk.get("alg") not in (None, alg):
        raise JoseError(f"key alg {jwk.get('alg')!r} does not match its type ({alg})")
    key: PublicKey
    try:
        if kty == "OKP":
            key = ed25519.Ed25519PublicKey.from_public_bytes(b64d(str(jwk["x"])))
        elif kty == "EC":
            x, y = b64d(str(jwk["x"])), b64d(str(jwk["y"]))
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        else:
            n, e = b64d(str(jwk["n"])), b64d(str(jwk["e"]))
            key = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
            if key.key_size < 2048:
                raise JoseError("RSA keys shorter than 2048 bits are refused")
    except (KeyError, ValueError) as exc:
        raise JoseError("invalid public key") from exc
    return VerifyKey(kid=str(jwk.get("kid") or ""), alg=alg, key=key)


def split(token: str) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """(header, payload bytes, signature, signing input) of a compact JWS, unverified."""
    if len(token) > MAX_TOKEN_BYTES:
        raise JoseError("token too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise JoseError("not a compact JWS")
    h64, p64, s64 = parts
    try:
        header = json.loads(b64d(h64))
    except ValueError as exc:
        raise JoseError("header is not JSON") from exc
    if not isinstance(header, dict):
        raise JoseError("header is not a JSON object")
    if "crit" in header:
        raise JoseError("critical header parameters are not supported")
    return header, b64d(p64), b64d(s64), f"{h64}.{p64}".encode("ascii")


def claims_of(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError as exc:
        raise JoseError("payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise JoseError("payload is not a JSON object")
    return claims


def unverified_claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims WITHOUT checking the signature: only to route to the right verifier."""
    header, payload, _, _ = split(token)
    return header, claims_of(payload)


def verify(
    token: str, keys: dict[str, VerifyKey], *, require_kid: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the signature with the key named by `kid`, in that key's own algorithm."""
    header, payload, sig, signing_input = split(token)
    kid = header.get("kid")
    if kid is None and not require_kid and len(keys) == 1:
        key = next(iter(keys.values()))
    elif not isinstance(kid, str) or kid not in keys:
        raise JoseError("unknown kid")
    else:
        key = keys[kid]
    alg = header.get("alg")
    if ALG_ALIASES.get(alg, alg) != key.alg:  # type: ignore[arg-type]
        raise JoseError(f"alg {header.get('alg')!r} is not the key's algorithm")
    if not key.verify(sig, signing_input):
        raise JoseError("bad signature")
    return header, claims_of(payload)


def sign_eddsa(private: ed25519.Ed25519PrivateKey, kid: str, claims: dict[str, Any], typ: str) -> str:
    header = {"alg": "EdDSA", "kid": kid, "typ": typ}
    h64 = b64e(json.dumps(header, separators=(",", ":")).encode())
    p64 = b64e(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{h64}.{p64}".encode("ascii")
    return f"{h64}.{p64}.{b64e(private.sign(signing_input))}"


__all__ = [
    "KEY_ALGS",
    "JoseError",
    "VerifyKey",
    "b64d",
    "b64e",
    "claims_of",
    "sign_eddsa",
    "split",
    "unverified_claims",
    "verify",
    "verify_key_from_jwk",
]

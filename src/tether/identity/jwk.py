"""Validation of the public keys an agent authenticates with."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from tether.errors import ValidationFailed

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}
#: key type → the one algorithm it may sign client assertions with (never taken from a header)
ALLOWED = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256"}


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    if jwk["kty"] == "OKP":
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    else:
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    raw = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()


def validate_public_jwk(jwk: Any, field: str = "jwks") -> dict[str, Any]:
    """A checked copy of one public JWK (Ed25519 or P-256), with `kid` and `alg` set."""
    if not isinstance(jwk, dict):
        raise ValidationFailed("a JWK must be a JSON object", field=field)
    if PRIVATE_MEMBERS & jwk.keys():
        raise ValidationFailed("the JWK holds private key material; register the public key only", field=field)
    kty, crv = jwk.get("kty"), jwk.get("crv")
    alg = ALLOWED.get((kty, crv))  # type: ignore[arg-type]
    if alg is None:
        raise ValidationFailed(f"unsupported key type {kty!r}/{crv!r}: use OKP/Ed25519 or EC/P-256", field=field)
    if jwk.get("alg") not in (None, alg):
        raise ValidationFailed(f"a {kty}/{crv} key signs with {alg}, not {jwk.get('alg')!r}", field=field)
    try:
        x = b64url_decode(str(jwk["x"]))
        y = b64url_decode(str(jwk["y"])) if kty == "EC" else b""
    except (KeyError, ValueError) as exc:
        raise ValidationFailed("the JWK's coordinates are missing or not base64url", field=field) from exc
    if (kty == "OKP" and len(x) != 32) or (kty == "EC" and (len(x) != 32 or len(y) != 32)):
        raise ValidationFailed("the JWK's coordinates have the wrong length", field=field)
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        if kty == "OKP":
            ed25519.Ed25519PublicKey.from_public_bytes(x)
        else:
            ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
    except ValueError as exc:
        raise ValidationFailed("the JWK is not a valid public key", field=field) from exc
    out = {k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk}
    kid = jwk.get("kid") or thumbprint(out)
    if not isinstance(kid, str) or not 1 <= len(kid) <= 128:
        raise ValidationFailed("the JWK's kid must be a string of 1 to 128 characters", field=field)
    out.update(kid=kid, alg=alg, use="sig")
    return out


def validate_jwks(jwks: Any, field: str = "jwks") -> dict[str, Any]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValidationFailed('a JWKS must be {"keys": [...]}', field=field)
    if len(jwks["keys"]) > 10:
        raise ValidationFailed("at most 10 keys per agent", field=field)
    keys = [validate_public_jwk(k, f"{field}.keys[{i}]") for i, k in enumerate(jwks["keys"])]
    kids = [k["kid"] for k in keys]
    if len(set(kids)) != len(kids):
        raise ValidationFailed("two keys share a kid", field=field)
    return {"keys": keys}


__all__ = ["ALLOWED", "thumbprint", "validate_jwks", "validate_public_jwk"]

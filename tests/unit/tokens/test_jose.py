"""The lean JWS code: algorithms pinned per key, malformed input refused."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tether.tokens.jose import JoseError, b64e, sign_eddsa, verify, verify_key_from_jwk


def ed_pair() -> tuple[ed25519.Ed25519PrivateKey, dict[str, str]]:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    priv = ed25519.Ed25519PrivateKey.generate()
    x = b64e(priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    return priv, {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1"}


def test_eddsa_round_trip_and_rfc9864_name() -> None:
    """A token signed EdDSA verifies; the header name Ed25519 means the same algorithm on this key."""
    priv, jwk = ed_pair()
    keys = {"k1": verify_key_from_jwk(jwk)}
    token = sign_eddsa(priv, "k1", {"a": 1}, "JWT")
    assert verify(token, keys)[1] == {"a": 1}
    _, p, s = token.split(".")
    renamed = b64e(json.dumps({"alg": "Ed25519", "kid": "k1"}).encode())
    with pytest.raises(JoseError, match="bad signature"):  # the header is signed: renaming breaks it
        verify(f"{renamed}.{p}.{s}", keys)
    fresh = f"{renamed}.{p}.{b64e(priv.sign(f'{renamed}.{p}'.encode()))}"
    assert verify(fresh, keys)[1] == {"a": 1}


@pytest.mark.parametrize("alg", ["none", "HS256", "ES256", "RS256", None])
def test_header_algorithm_other_than_the_keys_is_refused(alg: str | None) -> None:
    """Whatever the header claims, an Ed25519 key verifies EdDSA only."""
    priv, jwk = ed_pair()
    token = sign_eddsa(priv, "k1", {"a": 1}, "JWT")
    _, p, s = token.split(".")
    h = b64e(json.dumps({"alg": alg, "kid": "k1"}).encode())
    with pytest.raises(JoseError, match="alg"):
        verify(f"{h}.{p}.{s}", {"k1": verify_key_from_jwk(jwk)})


def test_key_alg_must_match_its_type() -> None:
    """A JWK claiming HS256 for an OKP key is rejected at load time."""
    _, jwk = ed_pair()
    with pytest.raises(JoseError):
        verify_key_from_jwk({**jwk, "alg": "HS256"})
    with pytest.raises(JoseError):
        verify_key_from_jwk({"kty": "oct", "k": "c2VjcmV0"})


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!.e30.", "e30.e30.e30", "W10.e30.e30"])
def test_malformed_tokens_are_refused(token: str) -> None:
    """Garbage never reaches signature verification as something valid."""
    _, jwk = ed_pair()
    with pytest.raises(JoseError):
        verify(token, {"k1": verify_key_from_jwk(jwk)})


def test_p256_keys_verify_es256() -> None:
    """Agents may register P-256 keys; their assertions are ES256 with raw r‖s signatures."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    priv = ec.generate_private_key(ec.SECP256R1())
    nums = priv.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64e(nums.x.to_bytes(32, "big")), "y": b64e(nums.y.to_bytes(32, "big")),
           "kid": "e1"}  # fmt: skip
    h = b64e(json.dumps({"alg": "ES256", "kid": "e1"}).encode())
    p = b64e(json.dumps({"x": 1}).encode())
    r, s = decode_dss_signature(priv.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256())))
    token = f"{h}.{p}.{b64e(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    assert verify(token, {"e1": verify_key_from_jwk(jwk)})[1] == {"x": 1}

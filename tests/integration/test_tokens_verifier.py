"""The verification library under attack, and revocation reaching every process within a second."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tether.api.wiring import Services, build_services
from tether.config import Settings
from tether.tokens import InvalidToken, TokenVerifier
from tether.tokens.jose import b64e
from tether.types import new_id, utcnow


@pytest.fixture
def verifier(services: Services) -> Iterator[TokenVerifier]:
    watcher = services.extras["revocation_watcher"]
    watcher.start()
    assert services.verifier is not None
    yield services.verifier
    watcher.stop()


def claims(services: Services, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {
        "iss": services.settings.issuer, "sub": "per_x", "act": {"sub": "agt_a"}, "client_id": "agt_a",
        "aud": f"{services.settings.base_url}/mcp", "scope": "mail:read", "task_id": new_id("tsk"),
        "jti": new_id("tok"), "iat": now, "nbf": now, "exp": now + 300,
    }  # fmt: skip
    c.update(overrides)
    return c


def mint(services: Services, **overrides: Any) -> str:
    return services.verifier.keyring.sign(claims(services, **overrides), "at+jwt")  # type: ignore[union-attr]


def raw(header: dict[str, Any], body: dict[str, Any], sig: bytes = b"") -> str:
    h, p = b64e(json.dumps(header).encode()), b64e(json.dumps(body).encode())
    return f"{h}.{p}.{b64e(sig)}"


def test_a_good_token_verifies_and_is_cached(services: Services, verifier: TokenVerifier) -> None:
    """A token Tether signed verifies; the second call is answered from the digest cache."""
    token = mint(services)
    vt = verifier.verify(token, audience=verifier.resource_url("mcp"))
    assert vt.scopes == {"mail:read"}
    assert vt.agent_id == "agt_a"
    assert vt.digest == hashlib.sha256(token.encode()).hexdigest()
    assert verifier.verify(token, audience=verifier.resource_url("mcp")) is vt


def test_token_with_alg_none_is_refused(services: Services, verifier: TokenVerifier) -> None:
    """`alg: none` with no signature never verifies."""
    kid = verifier.keyring.active_kid
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(
            raw({"alg": "none", "kid": kid, "typ": "at+jwt"}, claims(services)), audience=verifier.resource_url("mcp")
        )


def test_token_hs256_signed_with_the_public_key_is_refused(services: Services, verifier: TokenVerifier) -> None:
    """HS256 keyed with the published public JWK (algorithm confusion) is refused."""
    jwk = verifier.keyring.jwks()["keys"][0]
    header = {"alg": "HS256", "kid": jwk["kid"], "typ": "at+jwt"}
    h, p = b64e(json.dumps(header).encode()), b64e(json.dumps(claims(services)).encode())
    for secret in (json.dumps(jwk).encode(), jwk["x"].encode()):
        sig = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidToken, match="algorithm"):
            verifier.verify(f"{h}.{p}.{b64e(sig)}", audience=verifier.resource_url("mcp"))


def test_token_with_unknown_kid_is_refused(services: Services, verifier: TokenVerifier) -> None:
    """A kid that is not in the key ring is refused."""
    token = mint(services)
    _, p, s = token.split(".")
    forged_h = b64e(json.dumps({"alg": "EdDSA", "kid": "nope", "typ": "at+jwt"}).encode())
    with pytest.raises(InvalidToken, match="unknown kid"):
        verifier.verify(f"{forged_h}.{p}.{s}", audience=verifier.resource_url("mcp"))


def test_tampered_token_is_refused(services: Services, verifier: TokenVerifier) -> None:
    """Changing one claim breaks the signature."""
    h, _, s = mint(services).split(".")
    p = b64e(json.dumps(claims(services, scope="mail:read mail:send")).encode())
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(f"{h}.{p}.{s}", audience=verifier.resource_url("mcp"))


def test_expired_token_is_refused(services: Services, verifier: TokenVerifier) -> None:
    """exp beyond the bounded skew is refused."""
    now = int(time.time())
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(
            mint(services, iat=now - 400, nbf=now - 400, exp=now - 60), audience=verifier.resource_url("mcp")
        )


def test_token_with_nbf_in_the_future_is_refused(services: Services, verifier: TokenVerifier) -> None:
    """nbf a minute ahead is refused."""
    now = int(time.time())
    with pytest.raises(InvalidToken, match="not yet valid"):
        verifier.verify(mint(services, nbf=now + 60), audience=verifier.resource_url("mcp"))


def test_token_for_another_audience_is_refused(services: Services, verifier: TokenVerifier) -> None:
    """A token for one upstream is useless at another (exact aud match, also when cached)."""
    token = mint(services, aud=verifier.resource_url("proxy", "graph"))
    verifier.verify(token, audience=verifier.resource_url("proxy", "graph"))
    with pytest.raises(InvalidToken, match="audience"):
        verifier.verify(token, audience=verifier.resource_url("mcp"))
    with pytest.raises(InvalidToken, match="audience"):
        verifier.verify(token, audience=verifier.resource_url("proxy", "graph2"))


def test_token_from_another_issuer_is_refused(services: Services, verifier: TokenVerifier) -> None:
    """iss must be this Tether."""
    with pytest.raises(InvalidToken, match="issuer"):
        verifier.verify(mint(services, iss="https://other.example"), audience=verifier.resource_url("mcp"))


def test_delegation_token_is_not_an_access_token(services: Services, verifier: TokenVerifier) -> None:
    """A delegation token (typ tether-delegation+jwt) is refused by the gateways."""
    token = verifier.keyring.sign(claims(services), "tether-delegation+jwt")
    with pytest.raises(InvalidToken, match="not an access token"):
        verifier.verify(token, audience=verifier.resource_url("mcp"))


def test_verify_fails_closed_when_the_watermark_is_stale(services: Services) -> None:
    """Without a running watcher the revocation state goes stale and every token is refused."""
    assert services.verifier is not None
    services.extras["revocation_watcher"].refresh()
    token = mint(services)
    services.verifier.verify(token, audience=services.verifier.resource_url("mcp"))
    time.sleep(1.1)
    with pytest.raises(InvalidToken, match="failing closed"):
        services.verifier.verify(token, audience=services.verifier.resource_url("mcp"))


def test_rotation_keeps_old_tokens_valid_and_publishes_both_keys(services: Services, verifier: TokenVerifier) -> None:
    """After `keys rotate` the old key stays in the JWKS and its tokens still verify; new tokens use the new kid."""
    old_kid = verifier.keyring.active_kid
    old = mint(services)
    new_kid = verifier.keyring.rotate()
    assert new_kid != old_kid
    assert {k["kid"] for k in verifier.keyring.jwks()["keys"]} == {old_kid, new_kid}
    verifier.verify(old, audience=verifier.resource_url("mcp"))
    assert json.loads(__import__("base64").urlsafe_b64decode(mint(services).split(".")[0] + "=="))["kid"] == new_kid


@pytest.mark.slow
def test_revocation_reaches_a_second_verifier_within_a_second(services: Services, settings: Settings) -> None:
    """Another process (own Database/engine, same DB) refuses an ended task's token within 1 s."""
    other = build_services(settings, migrate=False)
    mine, theirs = services.extras["revocation_watcher"], other.extras["revocation_watcher"]
    mine.start()
    theirs.start()
    try:
        assert other.verifier is not None
        assert services.tokens is not None
        token = mint(services)
        aud = other.verifier.resource_url("mcp")
        vt = other.verifier.verify(token, audience=aud)
        with services.tokens.store.write() as repo:
            repo.add_revocation("task", vt.task_id, "test", utcnow())
        start = time.monotonic()
        reason = None
        while reason is None and time.monotonic() - start < 1.0:
            try:
                other.verifier.verify(token, audience=aud)
            except InvalidToken as exc:
                reason = exc.reason
            time.sleep(0.01)
        assert reason == "task ended", "revocation did not arrive within 1 s"
    finally:
        theirs.stop()
        mine.stop()
        other.close()

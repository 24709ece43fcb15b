"""The OAuth endpoints over HTTP: a third-party OAuth client, an independent JOSE library, revocation,
introspection, metadata and the tasks API, against a live server on both backends."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer
from tests.tokens_world import IDP_AUDIENCE, World, assertion, idp_token, make_world, write_trusted_issuers
from tether.api.wiring import Services
from tether.config import Settings
from tether.identity.model import Role
from tether.tokens.model import ASSERTION_TYPE, GRANT_TOKEN_EXCHANGE, JWT_TOKEN_TYPE


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url,
                    trusted_issuers=write_trusted_issuers(tmp_path / "conf"))  # fmt: skip


@pytest.fixture
def world(services: Services) -> World:
    return make_world(services)


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base, timeout=10) as client:
        yield client


def form(w: World, **kw: str) -> dict[str, str]:
    base = {
        "grant_type": GRANT_TOKEN_EXCHANGE, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(w.agent_a, w.key_a, w.services.settings.issuer),
        "subject_token": idp_token(w.person_subject), "subject_token_type": JWT_TOKEN_TYPE,
        "scope": "mail:read", "resource": w.mcp,
    }  # fmt: skip
    base.update(kw)
    return base


def test_authlib_client_performs_a_token_exchange_with_private_key_jwt(world: World, live_server: LiveServer) -> None:
    """authlib's OAuth2Client, private_key_jwt with the agent's Ed25519 key, gets a task token."""
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from joserfc.jwk import OKPKey

    issuer = world.services.settings.issuer
    # The agent's key file says alg "EdDSA"; authlib (joserfc) signs with RFC 9864's name "Ed25519".
    key = OKPKey.import_key({k: v for k, v in world.key_a.private_jwk.items() if k != "alg"})
    with OAuth2Client(
        client_id=world.agent_a, client_secret=key,
        # authlib's default assertion lives an hour; Tether accepts at most 5 minutes
        token_endpoint_auth_method=PrivateKeyJWT(
            f"{issuer}/oauth/token", alg="Ed25519", claims={"exp": int(time.time()) + 120}
        ),
    ) as client:  # fmt: skip
        token = client.fetch_token(
            f"{live_server.base}/oauth/token", grant_type=GRANT_TOKEN_EXCHANGE,
            subject_token=idp_token(world.person_subject), subject_token_type=JWT_TOKEN_TYPE,
            scope="mail:read", resource=world.mcp, task_purpose="triage",
        )  # fmt: skip
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "mail:read"
    assert token["expires_in"] == 300


def test_issued_tokens_verify_with_joserfc_against_the_published_jwks(world: World, http: httpx.Client) -> None:
    """An independent JOSE library accepts the token with the keys from /.well-known/jwks.json."""
    from joserfc import jwt
    from joserfc.errors import SecurityWarning
    from joserfc.jwk import KeySet

    resp = http.post("/oauth/token", data=form(world))
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    jwks = http.get("/.well-known/jwks.json").json()
    assert all("d" not in k for k in jwks["keys"])
    with warnings.catch_warnings():
        # joserfc flags the name "EdDSA" (RFC 9864 prefers "Ed25519"); the contract signs as "EdDSA".
        warnings.simplefilter("ignore", SecurityWarning)
        decoded = jwt.decode(resp.json()["access_token"], KeySet.import_key_set(jwks), algorithms=["EdDSA"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["sub"] == world.person
    assert decoded.claims["act"] == {"sub": world.agent_a}


def test_errors_are_rfc6749_json(world: World, http: httpx.Client) -> None:
    """invalid_scope names the excess; a bad assertion is 401 invalid_client; unknown grants are refused."""
    r = http.post("/oauth/token", data=form(world, scope="mail:read files:share"))
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_scope"
    assert r.json()["excess"] == ["files:share"]
    r = http.post("/oauth/token", data=form(world, client_assertion="a.b.c"))
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in r.headers
    r = http.post("/oauth/token", data=form(world, grant_type="password"))
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"
    r = http.post("/oauth/token", data=form(world, resource="https://evil.example/mcp"))
    assert r.json()["error"] == "invalid_target"
    r = http.post("/oauth/token", data=form(world, subject_token=idp_token(world.person_subject, aud="x")))
    assert r.json()["error"] == "invalid_grant"


def test_authorization_details_reach_the_verified_token(world: World, http: httpx.Client) -> None:
    """RFC 9396 details given at exchange come back as VerifiedToken.constraints; malformed ones are refused."""
    details = [{"type": "mailbox", "locations": ["pat@example.com"]}]
    r = http.post("/oauth/token", data=form(world, authorization_details=json.dumps(details)))
    assert r.status_code == 200, r.text
    world.services.extras["revocation_watcher"].refresh()
    vt = world.services.verifier.verify(r.json()["access_token"], audience=world.mcp)  # type: ignore[union-attr]
    assert vt.constraints == {"authorization_details": details}
    bad = http.post("/oauth/token", data=form(world, authorization_details='{"type": 1}'))
    assert bad.json()["error"] == "invalid_request"


def test_metadata_advertises_only_what_is_implemented(world: World, http: httpx.Client) -> None:
    """RFC 8414 metadata names the token-exchange grant and private_key_jwt only."""
    meta = http.get("/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == world.services.settings.issuer
    assert meta["grant_types_supported"] == [GRANT_TOKEN_EXCHANGE]
    assert meta["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    ready = http.get("/readyz").json()
    assert ready["checks"]["keys"] is True  # a signing key is loaded and the revocation watermark is fresh


def test_revocation_by_own_client_and_introspection(world: World, http: httpx.Client, admin: tuple[str, str]) -> None:
    """Introspection (admin) says active; the agent revokes its token (RFC 7009); then inactive."""
    token = http.post("/oauth/token", data=form(world)).json()["access_token"]
    auth = {"Authorization": f"Bearer {admin[1]}"}
    intro = http.post("/oauth/introspect", data={"token": token}, headers=auth).json()
    assert intro["active"] is True
    assert intro["sub"] == world.person
    assert intro["client_id"] == world.agent_a
    assert http.post("/oauth/introspect", data={"token": token}).status_code == 401
    r = http.post("/oauth/revoke", data={
        "token": token, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(world.agent_a, world.key_a, world.services.settings.issuer),
    })  # fmt: skip
    assert r.status_code == 200, r.text
    world.services.extras["revocation_watcher"].refresh()
    assert http.post("/oauth/introspect", data={"token": token}, headers=auth).json() == {"active": False}


def test_another_agent_cannot_revoke(world: World, http: httpx.Client) -> None:
    """Agent B's assertion cannot revoke agent A's token."""
    token = http.post("/oauth/token", data=form(world)).json()["access_token"]
    r = http.post("/oauth/revoke", data={
        "token": token, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(world.agent_b, world.key_b, world.services.settings.issuer),
    })  # fmt: skip
    assert r.status_code == 400
    assert r.json()["error"] == "unauthorized_client"


def test_tasks_api_lists_shows_and_ends(world: World, http: httpx.Client, admin: tuple[str, str]) -> None:
    """GET /v1/tasks, GET /v1/tasks/{id}, POST /v1/tasks/{id}/end; a stranger may not end it."""
    token = http.post("/oauth/token", data=form(world, task_purpose="weekly report")).json()["access_token"]
    auth = {"Authorization": f"Bearer {admin[1]}"}
    items = http.get("/v1/tasks", headers=auth).json()["items"]
    assert len(items) == 1
    assert items[0]["purpose"] == "weekly report"
    assert items[0]["status"] == "open"
    tid = items[0]["id"]
    assert http.get(f"/v1/tasks/{tid}", headers=auth).json()["scopes"] == ["mail:read"]
    stranger = world.services.identity.create_person("system", email="s@example.com", name="S", subject="s")
    s_tok = world.services.admin_tokens.issue(stranger.id, Role.AUDITOR, "t")
    r = http.post(f"/v1/tasks/{tid}/end", headers={"Authorization": f"Bearer {s_tok}"})
    assert r.status_code == 403
    sponsor_tok = world.services.admin_tokens.issue(world.sponsor, Role.AUDITOR, "t")
    r = http.post(f"/v1/tasks/{tid}/end", json={"reason": "done"}, headers={"Authorization": f"Bearer {sponsor_tok}"})
    assert r.status_code == 200
    assert r.json()["status"] == "ended"
    assert r.json()["end_reason"] == "done"
    assert http.post(f"/v1/tasks/{tid}/end", headers=auth).status_code == 409
    world.services.extras["revocation_watcher"].refresh()
    assert http.post("/oauth/introspect", data={"token": token}, headers=auth).json() == {"active": False}


def test_admin_mints_a_delegation_token_the_sdk_exchanges(
    world: World, http: httpx.Client, admin: tuple[str, str], live_server: LiveServer, tmp_path: Path
) -> None:
    """POST /v1/delegations/{id}/token, then tether.sdk.AgentClient exchanges it with a keygen-style key file."""
    from tether.sdk import AgentClient, ExchangeFailed

    r = http.post(f"/v1/delegations/{world.dlg_a}/token", json={"days": 7},
                  headers={"Authorization": f"Bearer {admin[1]}"})  # fmt: skip
    assert r.status_code == 200, r.text
    key_file = tmp_path / "agent.jwk.json"
    key_file.write_text(json.dumps({**world.key_a.private_jwk, "agent_id": world.agent_a}))
    client = AgentClient(live_server.base, key_file, issuer=world.services.settings.issuer)
    grant = client.exchange(r.json()["delegation_token"], "mail:send", world.mcp, "send the report")
    assert grant["scope"] == "mail:send"
    with pytest.raises(ExchangeFailed) as err:
        client.exchange(r.json()["delegation_token"], "files:read", world.mcp, "peek")
    assert err.value.error == "invalid_scope"
    client.close()


_ = IDP_AUDIENCE

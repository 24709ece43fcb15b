"""The admin API for the identity registry on a live server, both backends: auth, roles, bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tether.audit.chain import head
from tether.store.schema.identity import agents, delegations, persons

PROBLEM = "application/problem+json"


def _state(services: Any) -> tuple[Any, ...]:
    with services.db.read() as conn:
        counts = tuple(
            conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (persons, agents, delegations)
        )
        return counts, head(conn)


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def alice(services: Any) -> str:
    return str(
        services.identity.create_person(
            "system", email="alice@example.com", name="Alice", entitlements=["mail:read", "mail:send"]
        ).id
    )


def test_no_token_is_401_problem_with_www_authenticate(live_server: Any) -> None:
    """A request without a bearer token gets 401 problem+json and a WWW-Authenticate challenge."""
    r = httpx.get(live_server.base + "/v1/persons")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    assert r.json()["type"]


def test_auditor_cannot_write(live_server: Any, services: Any) -> None:
    """An auditor token may list persons but gets 403 on a write."""
    p = services.identity.create_person("system", email="aud@example.com", name="Aud", roles=["auditor"])
    tok = services.admin_tokens.issue(p.id, "auditor", "t")
    assert httpx.get(live_server.base + "/v1/persons", headers=_h(tok)).status_code == 200
    r = httpx.post(live_server.base + "/v1/persons", headers=_h(tok), json={"email": "x@example.com", "name": "X"})
    assert r.status_code == 403
    assert r.headers["content-type"].startswith(PROBLEM)


def test_token_of_deprovisioned_person_is_refused(live_server: Any, services: Any, admin: Any) -> None:
    """An admin token stops working the moment its person is deprovisioned."""
    p = services.identity.create_person("system", email="ex@example.com", name="Ex", roles=["admin"])
    tok = services.admin_tokens.issue(p.id, "admin", "t")
    assert httpx.get(live_server.base + "/v1/persons", headers=_h(tok)).status_code == 200
    services.identity.deprovision_person(admin[0], p.id)
    assert httpx.get(live_server.base + "/v1/persons", headers=_h(tok)).status_code in (401, 403)


def test_persons_paginate(live_server: Any, services: Any, admin: Any) -> None:
    """Listing walks every person exactly once through the `next` cursor."""
    for i in range(7):
        services.identity.create_person("system", email=f"p{i}@example.com", name=f"P{i}")
    seen: list[str] = []
    url = live_server.base + "/v1/persons"
    params: dict[str, str | int] = {"limit": 3}
    while True:
        body = httpx.get(url, headers=_h(admin[1]), params=params).json()
        assert len(body["items"]) <= 3
        seen += [p["id"] for p in body["items"]]
        if not body.get("next_cursor"):
            break
        params = {"limit": 3, "after": body["next_cursor"]}
    assert len(seen) == len(set(seen)) == 8


BAD_PERSONS = [
    ({"email": "a@example.com", "name": "A", "colour": "red"}, "colour"),
    ({"email": "a@example.com", "name": 5}, "name"),
    ({"email": "a@example.com", "name": "A" * 10_000}, "name"),
    ({"email": "a@example.com", "name": "A\x00B"}, "name"),
    ({"email": "a@example.com", "name": "A", "entitlements": ["mail:teleport"]}, "entitlements"),
    ({"email": "alice@example.com", "name": "Dup"}, "email"),
]


@pytest.mark.parametrize(("body", "field"), BAD_PERSONS)
def test_bad_person_is_4xx_naming_field_and_db_unchanged(
    live_server: Any, services: Any, admin: Any, alice: str, body: dict[str, Any], field: str
) -> None:
    """Bad person input is a 4xx problem naming the field; no row or audit event is written."""
    before = _state(services)
    r = httpx.post(live_server.base + "/v1/persons", headers=_h(admin[1]), json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert field in r.text
    assert _state(services) == before


def _agent(sponsor: str, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "bot", "sponsor_id": sponsor, "owner_team": "t", "purpose": "p",
                            "ceiling": ["mail:read"]}  # fmt: skip
    body.update(kw)
    return body


BAD_JWKS = [
    {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
            }
        ]
    },
    {"keys": [{"kty": "OKP", "crv": "X25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]},
    {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "!!not base64!!"}]},
]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda a: _agent("per_unknown"), "sponsor_id"),
        (lambda a: _agent(a, ceiling=["mail:teleport"]), "ceiling"),
        (lambda a: _agent(a, ceiling=["files:write"]), "ceiling"),
        (lambda a: _agent(a, mode="advisory", ceiling=["mail:send"]), "ceiling"),
        (lambda a: _agent(a, mode=3), "mode"),
        (lambda a: _agent(a, extra=1), "extra"),
        (lambda a: _agent(a, jwks=BAD_JWKS[0]), "jwks"),
        (lambda a: _agent(a, jwks=BAD_JWKS[1]), "jwks"),
        (lambda a: _agent(a, jwks=BAD_JWKS[2]), "jwks"),
    ],
)
def test_bad_agent_is_4xx_naming_field_and_db_unchanged(
    live_server: Any, services: Any, admin: Any, alice: str, make: Any, field: str
) -> None:
    """Bad agent input (unknown sponsor, excess/unknown ceiling, malformed JWK…) changes nothing."""
    before = _state(services)
    r = httpx.post(live_server.base + "/v1/agents", headers=_h(admin[1]), json=make(alice))
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert field in r.text, r.text
    assert _state(services) == before


def test_excess_ceiling_error_names_the_actions(live_server: Any, admin: Any, alice: str) -> None:
    """The refusal of a ceiling above the sponsor's entitlements lists the excess actions."""
    r = httpx.post(live_server.base + "/v1/agents", headers=_h(admin[1]),
                   json=_agent(alice, ceiling=["mail:read", "files:write", "calendar:write"]))  # fmt: skip
    assert r.status_code in (403, 409, 422)
    assert "files:write" in r.text
    assert "calendar:write" in r.text


def test_agent_lifecycle_over_the_api(live_server: Any, admin: Any, alice: str) -> None:
    """Create, suspend, resume, retire; a retired agent cannot be resumed (409)."""
    b, h = live_server.base, _h(admin[1])
    a = httpx.post(b + "/v1/agents", headers=h, json=_agent(alice)).json()
    assert a["status"] == "active"
    assert httpx.post(b + f"/v1/agents/{a['id']}/suspend", headers=h).json()["status"] == "suspended"
    assert httpx.post(b + f"/v1/agents/{a['id']}/resume", headers=h).json()["status"] == "active"
    assert httpx.post(b + f"/v1/agents/{a['id']}/retire", headers=h).json()["status"] == "retired"
    r = httpx.post(b + f"/v1/agents/{a['id']}/resume", headers=h)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith(PROBLEM)
    assert httpx.get(b + "/v1/agents/agt_nope", headers=h).status_code == 404

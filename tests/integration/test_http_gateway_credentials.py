"""Credentials the gateway cannot use. One the vault does not hold is the deployment's fault: the client gets a
502 that names no credential (it was a 404, "no credential named …", which reads as "no such resource"). One the
upstream's authorization server refuses fails after the call was decided and allowed: its outcome is recorded at
once (before, the allowed call had no outcome on record until a restart's recovery wrote "unknown")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.http_gateway_world import World, build_world
from tests.integration.test_http_gateway_attacks import events
from tether.sim.m365 import _gid


@pytest.fixture
def missing(tmp_path: Path, db_url: str) -> Iterator[World]:
    """Graph declared with a credential the vault does not hold."""
    yield from build_world(tmp_path, db_url, m365_credential="graph-not-in-the-vault")


@pytest.fixture
def refused(tmp_path: Path, db_url: str) -> Iterator[World]:
    """Graph's credential is a client credential whose secret the simulator's token endpoint refuses."""
    for world in build_world(tmp_path, db_url, m365_credential="graph-wrong-secret"):
        token_url = f"{world.sim_server.base}/contoso.example/oauth2/v2.0/token"
        world.services.extras["vault"].add("system", "graph-wrong-secret", "client_credentials",
                                           {"client_secret": "not-the-secret"},
                                           {"token_url": token_url, "client_id": "tether-gateway"})  # fmt: skip
        yield world


def get(world: World, path: str) -> httpx.Response:
    return httpx.get(f"{world.base}/proxy/m365{path}", headers={"Authorization": f"Bearer {world.token()}"})


def outcomes(world: World) -> dict[str, dict[str, object]]:
    """tool.completed outcomes by the decision event they answer."""
    world.enforcer.drain()
    return {str(e["parent_id"]): e["outcome"] for e in events(world, "tool.completed")}  # type: ignore[misc]


def test_a_credential_the_vault_does_not_hold_is_a_502_that_names_no_credential(missing: World) -> None:
    r = get(missing, "/v1.0/me/messages?$top=1")
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "upstream_credential_unavailable"
    assert "graph-not-in-the-vault" not in r.text
    assert missing.enforcer.calls == []  # found out before anything was decided or forwarded


def test_an_allowed_call_whose_credential_is_refused_has_its_outcome_recorded(refused: World) -> None:
    r = get(refused, "/v1.0/me/messages?$top=1")
    assert r.status_code == 502
    assert r.json()["code"] == "upstream_auth_failed"
    assert "not-the-secret" not in r.text
    decided = [str(e["id"]) for e in events(refused, "policy.decided") if e["decision"] == "allow"]
    assert len(decided) == 1
    outcome = outcomes(refused)[decided[0]]
    assert outcome["result"] == "credential_error"
    assert outcome["error"] == "upstream_auth_failed"


def test_a_batch_whose_credential_is_refused_records_an_outcome_for_every_allowed_inner_call(refused: World) -> None:
    batch = {"requests": [{"id": "1", "method": "GET", "url": "/me/messages?$top=1"},
                          {"id": "2", "method": "GET", "url": "/me/events"}]}  # fmt: skip
    r = httpx.post(f"{refused.base}/proxy/m365/v1.0/$batch", json=batch,
                   headers={"Authorization": f"Bearer {refused.token()}"})  # fmt: skip
    assert r.status_code == 502
    assert r.json()["code"] == "upstream_auth_failed"
    allowed = [str(e["id"]) for e in events(refused, "policy.decided") if e["decision"] == "allow"]
    assert len(allowed) == 2
    recorded = outcomes(refused)
    assert [recorded[d]["result"] for d in allowed] == ["credential_error", "credential_error"]
    assert [recorded[d]["batch"] for d in allowed] == [True, True]


def test_a_label_credential_the_vault_does_not_hold_is_a_502_not_a_404(tmp_path: Path, db_url: str) -> None:
    """The gateway's own credential for reading a drive item's sensitivity label is gone from the vault."""
    for world in build_world(tmp_path, db_url):
        assert world.services.extras["vault"].remove("graph-app")
        drive = _gid("drive", world.sim.by_upn["alice@contoso.example"])
        item = next(i for i in world.sim.items[drive].values() if i.get("name") != "root" and "file" in i)
        r = get(world, f"/v1.0/drives/{drive}/items/{item['id']}")
        assert r.status_code == 502, r.text
        assert r.json()["code"] == "upstream_credential_unavailable"
        assert "graph-app" not in r.text

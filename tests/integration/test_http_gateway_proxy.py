"""The HTTP gateway end to end: a task token in, the simulator's Graph answers out, credentials injected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.http_gateway_world import World, build_world


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from build_world(tmp_path, db_url)


def test_mail_list_is_proxied_with_the_per_person_token(world: World) -> None:
    """GET /me/messages through the gateway reaches the simulator with Alice's on-behalf-of token."""
    r = httpx.get(f"{world.base}/proxy/m365/v1.0/me/messages", headers={"Authorization": f"Bearer {world.token()}"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert len(doc["value"]) == 10
    assert doc["@odata.nextLink"].startswith(f"{world.base}/proxy/m365/v1.0/users/")
    assert r.headers["content-security-policy"] == "sandbox"
    assert r.headers["x-content-type-options"] == "nosniff"
    nxt = httpx.get(doc["@odata.nextLink"], headers={"Authorization": f"Bearer {world.token()}"})
    assert nxt.status_code == 200, nxt.text
    assert nxt.json()["value"][0]["id"] != doc["value"][0]["id"]


def test_each_upstream_publishes_its_protected_resource_metadata(world: World) -> None:
    """RFC 9728: the 401's resource_metadata URL answers with the exact audience a token must carry."""
    r = httpx.get(f"{world.base}/proxy/m365/v1.0/me")
    url = r.headers["www-authenticate"].split('resource_metadata="', 1)[1].rstrip('"')
    doc = httpx.get(url).json()
    assert doc["resource"] == f"{world.base}/proxy/m365"
    assert doc["authorization_servers"] == [world.services.settings.issuer]
    assert "mail:send" in doc["scopes_supported"]
    assert httpx.get(f"{world.base}/.well-known/oauth-protected-resource/proxy/nope").status_code == 404


def test_drive_downloads_and_uploads_go_through_the_gateway(world: World) -> None:
    """Content download streams through; an upload is decided as files:write (out of scope here: denied)."""
    h = {"Authorization": f"Bearer {world.token()}"}
    items = httpx.get(f"{world.base}/proxy/m365/v1.0/me/drive/root/children", headers=h).json()["value"]
    forecast = next(i for i in items if i["name"] == "Q3 forecast.xlsx")
    r = httpx.get(f"{world.base}/proxy/m365/v1.0/me/drive/items/{forecast['id']}/content", headers=h)
    assert r.status_code == 200
    assert r.content.startswith(b"Revenue forecast Q3")
    assert world.enforcer.calls[-1].resource.sensitivity == "confidential"
    up = httpx.put(f"{world.base}/proxy/m365/v1.0/me/drive/root:/x.txt:/content", content=b"hi", headers=h)
    assert up.status_code == 403
    assert up.json()["code"] == "denied"
    assert up.json()["policy_ids"] == ["tether:scope"]
    assert up.json()["decision_id"].startswith("dec_")


def test_prompt_and_traceparent_are_recorded(world: World) -> None:
    """Tether-Prompt reaches the decision as the agent's prompt; traceparent's trace id joins the events."""
    trace = "0af7651916cd43dd8448eb211c80319c"
    r = httpx.get(f"{world.base}/proxy/m365/v1.0/me/events", headers={
        "Authorization": f"Bearer {world.token()}", "Tether-Prompt": "what is on today%3F",
        "traceparent": f"00-{trace}-b7ad6b7169203331-01"})  # fmt: skip
    assert r.status_code == 200
    call = world.enforcer.calls[-1]
    assert call.prompt == "what is on today?"
    assert call.trace_id == trace

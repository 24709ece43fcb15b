"""/v1/policies and the AuthZEN PDP on a live server, both backends."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.tokens_world import idp_token, make_world, request, write_trusted_issuers
from tether.config import Settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    bundle = tmp_path / "policies"
    bundle.mkdir()
    (bundle / "p.cedar").write_text('@id("allow-reads")\npermit (principal, action in Action::"read", resource);\n')
    return Settings(data_dir=tmp_path / "data", database_url=db_url, policy_dir=bundle,
                    trusted_issuers=write_trusted_issuers(tmp_path / "conf"))  # fmt: skip


def test_a_bad_bundle_is_refused_and_the_running_one_stays(live_server, admin, settings):
    """POST /v1/policies/reload with a broken file → 422 naming file and line; decisions continue."""
    h = {"Authorization": f"Bearer {admin[1]}"}
    before = httpx.get(live_server.base + "/v1/policies", headers=h).json()
    assert [p["id"] for p in before["policies"]] == ["allow-reads"]
    (settings.policy_dir / "p.cedar").write_text("permit (principal action, resource);")
    r = httpx.post(live_server.base + "/v1/policies/reload", headers=h)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["problems"][0]["file"] == "p.cedar"
    after = httpx.get(live_server.base + "/v1/policies", headers=h).json()
    assert after["bundle"] == before["bundle"]
    assert "p.cedar:1" in after["last_error"]


def test_reload_needs_an_admin(live_server, services):
    """An auditor may read the bundle status but not reload it."""
    p = services.identity.create_person("system", email="aud@example.com", name="Aud", roles=["auditor"])
    tok = services.admin_tokens.issue(p.id, "auditor")
    h = {"Authorization": f"Bearer {tok}"}
    assert httpx.get(live_server.base + "/v1/policies", headers=h).status_code == 200
    assert httpx.post(live_server.base + "/v1/policies/reload", headers=h).status_code == 403


def test_authzen_evaluation_decides_for_the_token_not_the_caller(live_server, admin, services):
    """The subject is proven by its task token; reserved context keys are refused; no credentials → 401."""
    w = make_world(services)
    assert services.tokens is not None
    token = services.tokens.exchange(request(w, idp_token(w.person_subject), scope="mail:read mail:send"))[
        "access_token"
    ]
    url = live_server.base + "/access/v1/evaluation"
    body = {
        "subject": {"type": "agent", "id": w.agent_a, "properties": {"token": token, "audience": w.mcp}},
        "action": {"name": "mail:read"},
        "resource": {"type": "MailMessage", "id": "m1", "properties": {"system": "m365.mail"}},
    }
    assert httpx.post(url, json=body).status_code == 401
    h = {"Authorization": f"Bearer {admin[1]}"}
    r = httpx.post(url, json=body, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["decision"] is True
    assert r.json()["context"]["tether"]["policy_ids"] == ["allow-reads"]
    body["action"] = {"name": "mail:send"}
    denied = httpx.post(url, json=body, headers=h).json()
    assert denied["decision"] is False
    assert denied["context"]["tether"]["effect"] == "deny"
    body["context"] = {"approved": True}
    assert httpx.post(url, json=body, headers=h).status_code == 400
    body["context"] = {}
    body["subject"]["properties"]["token"] = token[:-4] + "AAAA"
    assert httpx.post(url, json=body, headers=h).status_code == 401
    batch = httpx.post(live_server.base + "/access/v1/evaluations", headers=h, json={
        "subject": {"type": "agent", "id": w.agent_a, "properties": {"token": token, "audience": w.mcp}},
        "resource": {"type": "MailMessage", "id": "m1"},
        "evaluations": [{"action": {"name": "mail:read"}}, {"action": {"name": "mail:send"}}],
    })  # fmt: skip
    assert [e["decision"] for e in batch.json()["evaluations"]] == [True, False]

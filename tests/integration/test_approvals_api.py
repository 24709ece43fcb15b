"""The /v1 approvals and break-glass API: roles, the decider's person, problem documents."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.approvals_world import make_world, pending
from tether.api.app import create_app
from tether.identity.model import Role


@pytest.fixture
def world(services):
    return make_world(services)


@pytest.fixture
def client(services):
    with TestClient(create_app(services)) as c:
        yield c


def _bearer(services, person_id, role):
    return {"Authorization": f"Bearer {services.admin_tokens.issue(person_id, role)}"}


async def test_sponsor_approves_through_the_api(world, client, services):
    """GET lists the pending request with its arguments; the sponsor's approve is recorded as theirs."""
    a = await pending(world)
    sponsor = _bearer(services, world.sponsor, Role.APPROVER)
    r = client.get("/v1/approvals", params={"status": "pending"}, headers=sponsor)
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["id"] == a.id
    assert item["arguments"]["subject"] == "Q3 report"
    assert item["reasons"] == ["Sending confidential mail outside the company needs approval"]
    r = client.post(f"/v1/approvals/{a.id}/approve", json={"reason": "expected"}, headers=sponsor)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    assert r.json()["decided_by"] == world.sponsor
    r = client.post(f"/v1/approvals/{a.id}/deny", json={"reason": "again"}, headers=sponsor)
    assert r.status_code == 409
    assert r.json()["code"] == "approval_closed"
    assert client.get(f"/v1/approvals/{a.id}", headers=sponsor).json()["deliveries"] == []


async def test_auditor_may_read_but_not_decide(world, client, services):
    """Deciding needs the approver role; an auditor token is refused with 403."""
    a = await pending(world)
    auditor = _bearer(services, world.sponsor, Role.AUDITOR)
    assert client.get(f"/v1/approvals/{a.id}", headers=auditor).status_code == 200
    r = client.post(f"/v1/approvals/{a.id}/approve", json={"reason": "x"}, headers=auditor)
    assert r.status_code == 403


async def test_task_person_cannot_approve_four_eyes_request(world, client, services):
    """Under not-self the task's person gets 403 not_an_approver, with no state change."""
    a = await pending(world, approver="not-self")
    r = client.post(f"/v1/approvals/{a.id}/approve", json={"reason": "mine"},
                    headers=_bearer(services, world.person, Role.APPROVER))  # fmt: skip
    assert r.status_code == 403
    assert r.json()["code"] == "not_an_approver"
    assert services.approvals.get(a.id).status.value == "pending"


def test_decision_without_reason_or_with_extra_fields_is_refused(world, client, services):
    """The body is strict: a reason is required and unknown fields are refused."""
    h = _bearer(services, world.sponsor, Role.APPROVER)
    assert client.post("/v1/approvals/apr_x/approve", json={}, headers=h).status_code == 422
    r = client.post("/v1/approvals/apr_x/approve", json={"reason": "x", "approved_by": "someone"}, headers=h)
    assert r.status_code == 422


def test_breakglass_and_second_person_review(world, client, services):
    """POST /v1/breakglass needs the role; the invoker cannot review; another person closes it."""
    body = {"agent_id": world.agent, "justification": "mail outage, incident 42", "duration": 600}
    r = client.post("/v1/breakglass", json=body, headers=_bearer(services, world.sponsor, Role.APPROVER))
    assert r.status_code == 403
    invoker = _bearer(services, world.breakglass, Role.BREAKGLASS)
    r = client.post("/v1/breakglass", json={**body, "duration": 7200}, headers=invoker)
    assert r.status_code == 422
    r = client.post("/v1/breakglass", json=body, headers=invoker)
    assert r.status_code == 201, r.text
    bg = r.json()
    assert bg["active"] is True
    assert bg["review_status"] == "open"
    assert services.approvals.breakglass_for(world.agent, world.task) is not None
    r = client.post(f"/v1/breakglass/{bg['id']}/review", json={"note": "fine"}, headers=invoker)
    assert r.status_code == 403
    r = client.post(f"/v1/breakglass/{bg['id']}/review", json={"note": "reviewed: justified"},
                    headers=_bearer(services, world.security, Role.AUDITOR))  # fmt: skip
    assert r.status_code == 200
    assert r.json()["review_status"] == "closed"
    r = client.get("/v1/breakglass", params={"review": "open"}, headers=invoker)
    assert r.json()["items"] == []

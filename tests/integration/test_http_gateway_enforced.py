"""The HTTP gateway on Tether's real enforcement step: Cedar default pack, audit writer, approvals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.http_gateway_world import World, build_world
from tether.sim.m365 import _gid
from tether.store.schema.audit import audit_events


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from build_world(tmp_path, db_url, real=True)


def invite(world: World, name: str, approval: str | None = None) -> httpx.Response:
    uid = world.sim.by_upn["alice@contoso.example"]
    drive = _gid("drive", uid)
    item = next(i for i in world.sim.items[drive].values() if i.get("name") == name)
    headers = {"Authorization": f"Bearer {world.token(scopes='files:read files:share mail:read')}"}
    if approval:
        headers["Tether-Approval"] = approval
    body = {"recipients": [{"email": "pat@fabrikam.example"}], "roles": ["read"], "requireSignIn": True}
    return httpx.post(f"{world.base}/proxy/m365/v1.0/drives/{drive}/items/{item['id']}/invite", json=body,
                      headers=headers)  # fmt: skip


def types(world: World) -> list[str]:
    with world.services.db.read() as conn:
        return [r[0] for r in conn.execute(select(audit_events.c.type).order_by(audit_events.c.seq)).all()]


async def test_sharing_a_confidential_file_outside_waits_for_the_sponsor_then_goes_through_once(world: World) -> None:
    """Default pack: external share of a Confidential file → approval; approved retry forwards; reuse refused."""
    r = invite(world, "Q3 forecast.xlsx")
    assert r.status_code == 403, r.text
    doc = r.json()
    assert doc["code"] == "approval_required"
    assert doc["policy_ids"] == ["external.confidential-needs-approval"]
    assert world.sim.shares == []
    approvals = world.services.approvals
    assert approvals is not None
    await approvals.decide(world.person_id, doc["approval_id"], approve=True, reason="Pat is our auditor")
    ok = invite(world, "Q3 forecast.xlsx", approval=doc["approval_id"])
    assert ok.status_code == 200, ok.text
    assert [s["to"] for s in world.sim.shares] == [["pat@fabrikam.example"]]
    again = invite(world, "Q3 forecast.xlsx", approval=doc["approval_id"])
    assert again.status_code == 403
    assert again.json()["code"] == "approval_invalid"
    world.enforcer.drain()
    seen = types(world)
    for kind in ("tool.requested", "policy.decided", "approval.requested", "approval.decided", "approval.used",
                 "tool.completed"):  # fmt: skip
        assert kind in seen, kind
    # the story after the sponsor's decision reads in order: each retry is on record before its approval is spent
    story = [k for k in seen[seen.index("approval.decided") + 1 :] if k.startswith(("tool.", "policy.", "approval."))]
    assert story == ["tool.requested", "approval.used", "policy.decided", "tool.completed",
                     "tool.requested", "approval.refused"], story  # fmt: skip


def test_a_highly_confidential_file_never_leaves(world: World) -> None:
    """Board minutes (Highly Confidential) shared outside: denied outright, no approval offered."""
    r = invite(world, "Board minutes.docx")
    assert r.status_code == 403
    assert r.json()["code"] == "denied"
    assert "external.highly-confidential-never" in r.json()["policy_ids"]
    assert "approval_id" not in r.json()


def test_reads_inside_scope_are_allowed_and_recorded(world: World) -> None:
    """A mail read within the task's scope is allowed by base.task-scope and leaves a chained record."""
    r = httpx.get(f"{world.base}/proxy/m365/v1.0/me/messages", headers={"Authorization": f"Bearer {world.token()}"})
    assert r.status_code == 200, r.text
    with world.services.db.read() as conn:
        bodies = [json.loads(b) for (b,) in conn.execute(
            select(audit_events.c.body).where(audit_events.c.type == "policy.decided")
            .order_by(audit_events.c.seq)).all()]  # fmt: skip
    assert any(b["decision"] == "allow" and b["action"] == "mail:read" for b in bodies)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # msgraph-sdk's generated classes warn on import
async def test_msgraph_sdk_share_outside_is_refused_until_the_sponsor_approves(world: World) -> None:
    """The official SDK, on the real pack: refused (403) until approved, then the same call succeeds."""
    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.drives.item.items.item.invite.invite_post_request_body import InvitePostRequestBody
    from msgraph.generated.models.drive_recipient import DriveRecipient

    from tests.integration.test_http_gateway_msgraph_sdk import graph, sdk_http

    uid = world.sim.by_upn["alice@contoso.example"]
    drive = _gid("drive", uid)
    item = next(i for i in world.sim.items[drive].values() if i.get("name") == "Customer list.csv")
    body = InvitePostRequestBody(recipients=[DriveRecipient(email="pat@fabrikam.example")], roles=["read"])
    async with sdk_http() as http:
        call = graph(world, http).drives.by_drive_id(drive).items.by_drive_item_id(item["id"]).invite
        with pytest.raises(APIError) as refused:
            await call.post(body)
        assert refused.value.response_status_code == 403
        approvals = world.services.approvals
        assert approvals is not None
        pending = approvals.list_approvals(status="pending").items
        assert len(pending) == 1
        await approvals.decide(world.person_id, pending[0].id, approve=True, reason="ok")
        cfg = RequestConfiguration()
        cfg.headers.add("Tether-Approval", pending[0].id)
        result = await call.post(body, request_configuration=cfg)
        assert result is not None
        assert result.value
    assert world.sim.shares[-1]["to"] == ["pat@fabrikam.example"]

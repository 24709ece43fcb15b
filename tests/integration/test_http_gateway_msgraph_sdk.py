"""The official Microsoft Graph SDK (msgraph-sdk, kiota over httpx) pointed at the gateway with a task token."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.drives.item.items.item.invite.invite_post_request_body import InvitePostRequestBody
from msgraph.generated.models.drive_recipient import DriveRecipient
from msgraph.graph_request_adapter import GraphRequestAdapter

from tests.http_gateway_world import World, build_world

# the generated msgraph-sdk 1.65 classes warn about their own deprecated request configurations on import
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class TaskToken(AccessTokenProvider):  # type: ignore[misc]
    """Hands the SDK the agent's short-lived task token (the only credential the agent holds)."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self.world.token()

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator(["127.0.0.1"])


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from build_world(tmp_path, db_url)


@contextlib.asynccontextmanager
async def sdk_http() -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose own transport we close: the SDK's wrapping transport does not forward aclose."""
    transport = httpx.AsyncHTTPTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        try:
            yield http
        finally:
            await transport.aclose()


def graph(world: World, client: httpx.AsyncClient) -> GraphServiceClient:
    """The SDK's own client (its default middleware: /me rewriting, retries, redirects) aimed at the gateway."""
    from msgraph.graph_request_adapter import options
    from msgraph_core import GraphClientFactory

    client = GraphClientFactory.create_with_default_middleware(client=client, options=options)
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(TaskToken(world)), client=client)
    adapter.base_url = f"{world.base}/proxy/m365/v1.0"
    return GraphServiceClient(request_adapter=adapter)


async def test_msgraph_sdk_lists_mail_and_reads_an_event(world: World) -> None:
    """The SDK lists Alice's mail and reads one of her events through the gateway."""
    async with sdk_http() as http:
        g = graph(world, http)
        messages = await g.me.messages.get()
        assert messages is not None
        assert messages.value
        assert all(m.subject for m in messages.value)
        assert messages.odata_next_link
        assert messages.odata_next_link.startswith(f"{world.base}/proxy/m365/")
        events = await g.me.events.get()
        assert events is not None
        assert events.value
        event = await g.me.events.by_event_id(events.value[0].id).get()
        assert event is not None
        assert event.subject == events.value[0].subject
    assert [c.action for c in world.enforcer.calls] == ["mail:read", "calendar:read", "calendar:read"]


async def test_msgraph_sdk_is_refused_sharing_a_confidential_document_outside_until_approved(world: World) -> None:
    """Inviting an outside address to a Confidential file needs approval; the approved retry goes through once."""
    uid = world.sim.by_upn["alice@contoso.example"]
    from tether.sim.m365 import _gid

    drive_id = _gid("drive", uid)
    item = next(i for i in world.sim.items[drive_id].values() if i.get("name") == "Q3 forecast.xlsx")
    body = InvitePostRequestBody(recipients=[DriveRecipient(email="pat@fabrikam.example")], roles=["read"],
                                 require_sign_in=True, send_invitation=True)  # fmt: skip
    async with sdk_http() as http:
        invite = graph(world, http).drives.by_drive_id(drive_id).items.by_drive_item_id(item["id"]).invite
        with pytest.raises(APIError) as refused:
            await invite.post(body)
        assert refused.value.response_status_code == 403
        assert world.sim.shares == []
        call = world.enforcer.calls[-1]
        assert call.resource.sensitivity == "confidential"  # from the item's label, fetched by the gateway
        assert call.facts["external_recipients"] == 1
        approval_id = next(iter(world.enforcer.approvals))

        cfg = RequestConfiguration()
        cfg.headers.add("Tether-Approval", approval_id)
        with pytest.raises(APIError):  # not approved yet
            await invite.post(body, request_configuration=cfg)
        world.enforcer.approvals[approval_id]["status"] = "pending"  # the refused retry did not use it
        world.enforcer.approve(approval_id)
        result = await invite.post(body, request_configuration=cfg)
        assert result is not None
        assert result.value
        assert world.sim.shares == [{"item": item["id"], "kind": "invite", "to": ["pat@fabrikam.example"],
                                     "roles": ["read"]}]  # fmt: skip
        with pytest.raises(APIError):  # used once
            await invite.post(body, request_configuration=cfg)

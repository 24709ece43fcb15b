"""The shipped Microsoft Graph v1.0 route map and the facts it reads from requests."""

from __future__ import annotations

import json

import pytest

from tether import actions
from tether.gateway.http.normalise import normalise_path
from tether.gateway.http.routes import RouteMap, RouteMapDoc, extract_facts, load_route_map

GRAPH = load_route_map("graph")

COVERED = [
    ("GET", "/v1.0/me/messages", "mail:read", "messages.list"),
    ("GET", "/v1.0/users/bob@contoso.example/mailFolders/inbox/messages", "mail:read", "messages.list"),
    ("GET", "/v1.0/me/messages/AAMk1", "mail:read", "messages.get"),
    ("POST", "/v1.0/me/sendMail", "mail:send", "messages.send"),
    ("POST", "/v1.0/me/messages/AAMk1/reply", "mail:reply", "messages.reply"),
    ("POST", "/v1.0/me/messages/AAMk1/replyAll", "mail:reply", "messages.replyAll"),
    ("POST", "/v1.0/me/messages/AAMk1/forward", "mail:forward", "messages.forward"),
    ("DELETE", "/v1.0/me/messages/AAMk1", "mail:delete", "messages.delete"),
    ("POST", "/v1.0/me/messages/AAMk1/move", "mail:move", "messages.move"),
    ("GET", "/v1.0/me/mailFolders", "mail:read", "mailFolders.list"),
    ("GET", "/v1.0/me/events", "calendar:read", "events.list"),
    ("POST", "/v1.0/me/events", "calendar:write", "events.create"),
    ("PATCH", "/v1.0/me/events/E1", "calendar:write", "events.update"),
    ("DELETE", "/v1.0/me/calendar/events/E1", "calendar:delete", "events.delete"),
    ("POST", "/v1.0/me/events/E1/accept", "calendar:respond", "events.respond"),
    ("GET", "/v1.0/me/drive/root/children", "files:read", "driveItems.children"),
    ("GET", "/v1.0/drives/D1/items/I1", "files:read", "driveItems.get"),
    ("GET", "/v1.0/me/drive/items/I1/content", "files:read", "driveItems.content"),
    ("PUT", "/v1.0/me/drive/root:/plan.docx:/content", "files:write", "driveItems.upload"),
    ("PUT", "/v1.0/sites/S1/drive/items/P1:/plan.docx:/content", "files:write", "driveItems.upload"),
    ("DELETE", "/v1.0/me/drive/items/I1", "files:delete", "driveItems.delete"),
    ("POST", "/v1.0/me/drive/items/I1/createLink", "files:share", "driveItems.createLink"),
    ("POST", "/v1.0/users/u1/drive/items/I1/invite", "files:share", "driveItems.invite"),
    ("GET", "/v1.0/sites", "sites:read", "sites.list"),
    ("GET", "/v1.0/sites/contoso.example,a,b/lists/L1/items", "sites:read", "lists.list"),
    ("GET", "/v1.0/users", "users:read", "users.list"),
    ("GET", "/v1.0/users/bob@contoso.example", "users:read", "users.get"),
    ("POST", "/v1.0/$batch", "http:read", "batch"),
]


@pytest.mark.parametrize(("method", "path", "action", "route"), COVERED)
def test_graph_map_covers_the_issue_s_operations(method: str, path: str, action: str, route: str) -> None:
    """Each Graph operation the issue lists maps to its action."""
    m = GRAPH.match(method, normalise_path(path))
    assert m is not None, path
    assert (m.spec.action, m.spec.name) == (action, route)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1.0/me/drive/items/I1/permissions"), ("POST", "/v1.0/me/messages/AAMk1/send"),
     ("GET", "/beta/me/messages"), ("PUT", "/v1.0/me/messages"), ("GET", "/v1.0/me/messages/a/b/c")],
)  # fmt: skip
def test_unmapped_operations_match_nothing(method: str, path: str) -> None:
    """Anything outside the map (other verbs, beta, permissions listing) has no route, so it is denied."""
    assert GRAPH.match(method, normalise_path(path)) is None


def test_every_graph_action_is_in_the_catalogue() -> None:
    """Route actions are known actions, so policy and ceilings can name them."""
    for routes in GRAPH.routes.values():
        for r in routes:
            assert actions.is_known(r.spec.action)


def test_send_mail_counts_recipients_outside_the_tenant() -> None:
    """Recipients from to/cc/bcc are lower-cased and external domains counted against the tenant."""
    m = GRAPH.match("POST", normalise_path("/v1.0/me/sendMail"))
    assert m is not None
    body = json.loads(json.dumps({"message": {
        "toRecipients": [{"emailAddress": {"address": "Bob@Contoso.example"}}],
        "ccRecipients": [{"emailAddress": {"address": "pat@fabrikam.example"}}],
        "bccRecipients": [{"emailAddress": {"address": "q@northwind.example"}}],
        "attachments": [{"name": "a"}, {"name": "b"}],
    }}))  # fmt: skip
    facts = extract_facts(m.spec, body, [], ["contoso.example"])
    assert facts["recipients"] == ["bob@contoso.example", "pat@fabrikam.example", "q@northwind.example"]
    assert facts["external_recipients"] == 2
    assert facts["external_domains"] == ["fabrikam.example", "northwind.example"]
    assert facts["attachments"] == 2


def test_sharing_counts_what_it_cannot_place_inside_the_tenant_as_external() -> None:
    """An anonymous link, or one of the tenant's default scope, counts as one external recipient; invitees
    named by alias or object id are no tenant address, so they count as external too (fail closed)."""
    link = GRAPH.match("POST", normalise_path("/v1.0/me/drive/items/x/createLink"))
    invite = GRAPH.match("POST", normalise_path("/v1.0/me/drive/items/x/invite"))
    assert link is not None
    assert invite is not None
    tenant = ["contoso.example"]
    assert extract_facts(link.spec, {"type": "view", "scope": "anonymous"}, [], tenant)["external_recipients"] == 1
    assert extract_facts(link.spec, {"type": "view"}, [], tenant)["external_recipients"] == 1
    assert extract_facts(link.spec, {"type": "view", "scope": "organization"}, [], tenant)["external_recipients"] == 0
    people = {"recipients": [{"email": "bob@contoso.example"}, {"objectId": "5f1c-77"}, {"alias": "pat"}]}
    facts = extract_facts(invite.spec, people, [], tenant)
    assert facts["external_recipients"] == 2
    assert (
        extract_facts(invite.spec, {"recipients": [{"email": "bob@contoso.example"}]}, [], tenant)[
            "external_recipients"
        ]
        == 0
    )


def test_a_map_with_an_unknown_action_does_not_load() -> None:
    """A route naming an action the catalogue lacks is a load error, not a silent allow."""
    doc = RouteMapDoc.model_validate({"name": "x", "routes": [{"name": "r", "method": "GET", "paths": ["/a"],
                                      "action": "nope:thing", "resource": {"type": "T", "system": "s"}}]})  # fmt: skip
    with pytest.raises(ValueError, match="unknown action"):
        RouteMap(doc)


def test_a_map_may_declare_new_actions() -> None:
    """`actions:` registers a map's own actions with their type."""
    doc = RouteMapDoc.model_validate({"name": "x", "actions": {"crm:export": "read"}, "routes": [
        {"name": "r", "method": "GET", "paths": ["/export/{id}"], "action": "crm:export",
         "resource": {"type": "T", "system": "crm", "id": "{id}"}}]})  # fmt: skip
    m = RouteMap(doc).match("GET", ("EXPORT", "42"))
    assert m is not None
    assert m.params == {"id": "42"}


def test_graph_resource_types_are_cedar_entity_types() -> None:
    """Every decided route names a resource type of the Cedar schema (the batch envelope is never decided)."""
    from tether.policy.schema import RESOURCE_TYPES

    for routes in GRAPH.routes.values():
        for r in routes:
            assert r.spec.batch or r.spec.resource.type in RESOURCE_TYPES, r.spec.name


def test_a_reply_joins_the_original_messages_recipients_read_by_lookup() -> None:
    """The lookup's answer adds its addresses to the body's; no answer counts one recipient as anyone."""
    reply_all = GRAPH.match("POST", normalise_path("/v1.0/me/messages/m1/replyAll"))
    assert reply_all is not None
    assert reply_all.spec.lookup is not None
    tenant = ["contoso.example"]
    original = {
        "from": {"emailAddress": {"address": "pat@fabrikam.example"}},
        "toRecipients": [{"emailAddress": {"address": "alice@contoso.example"}}],
        "ccRecipients": [{"emailAddress": {"address": "Q@Northwind.example"}}, {"emailAddress": {}}],
    }
    body = {"message": {"toRecipients": [{"emailAddress": {"address": "bob@contoso.example"}}]}}
    facts = extract_facts(reply_all.spec, body, [], tenant, original)
    assert facts["recipients"] == [
        "alice@contoso.example", "bob@contoso.example", "pat@fabrikam.example", "q@northwind.example",
    ]  # fmt: skip
    assert facts["external_domains"] == ["fabrikam.example", "northwind.example"]
    unknown = extract_facts(reply_all.spec, body, [], tenant, None)
    assert unknown["external_recipients"] == 1
    assert unknown["external_domains"] == ["*"]
    # a route without a lookup is not affected by a missing answer
    send = GRAPH.match("POST", normalise_path("/v1.0/me/sendMail"))
    assert send is not None
    assert extract_facts(send.spec, body, [], tenant, None)["external_recipients"] == 0


def test_a_reply_counts_the_originals_recipients_only_when_the_original_is_ones_own() -> None:
    reply = GRAPH.match("POST", normalise_path("/v1.0/me/messages/m1/reply"))
    assert reply is not None
    tenant = ["contoso.example"]
    own = {"from": {"emailAddress": {"address": "Alice@contoso.example"}},
           "toRecipients": [{"emailAddress": {"address": "pat@fabrikam.example"}}]}  # fmt: skip
    assert extract_facts(reply.spec, {}, [], tenant, own, "alice@contoso.example")["external_recipients"] == 1
    assert extract_facts(reply.spec, {}, [], tenant, own, "bob@contoso.example")["external_recipients"] == 0
    assert extract_facts(reply.spec, {}, [], tenant, own, None)["external_recipients"] == 1  # owner unknown

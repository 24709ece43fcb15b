"""Findings of a review of the HTTP gateway, each an attack that got through before and is refused now.

What the decision reads must be what the upstream gets (one Content-Type, a JSON body where facts come
from it, no method or URL override headers, $batch inner requests rebuilt from what was decided); what
leaves the upstream is scanned wherever a credential can hide (redirects, header names, JSON escapes,
codings the gateway cannot decode); facts and owners are never guessed in the agent's favour (anonymous
links, drives a path does not tie to a person, list answers on single-item routes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.http_gateway_world import World, build_world
from tests.integration.test_http_gateway_attacks import events
from tether.sim.m365 import _gid


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from build_world(tmp_path, db_url)


@pytest.fixture
def real_world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from build_world(tmp_path, db_url, real=True)


@pytest.fixture
def app_only_world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from build_world(tmp_path, db_url, real=True, m365_credential="graph-app")


def get(world: World, path: str, upstream: str = "hostile", **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {world.token(upstream)}"}
    return httpx.get(f"{world.base}/proxy/{upstream}{path}", headers={**auth, **headers})


def leaks(world: World) -> list[str]:
    world.enforcer.drain()
    return [str(e["detail"]["where"]) for e in events(world, "credential.leak_blocked")]  # type: ignore[index]


# ---------------------------------------------------------------------- leak scanning


def test_a_redirect_holding_the_credential_is_withheld(world: World) -> None:
    """A same-upstream redirect whose Location carries the credential: withheld (502), not rewritten and relayed."""
    r = get(world, "/api/redirect-leak")
    assert r.status_code == 502
    assert world.canaries["bearer"] not in json.dumps(dict(r.headers)) + r.text
    assert leaks(world) == ["header"]


def test_a_header_name_holding_the_credential_is_withheld(world: World) -> None:
    r = get(world, "/api/header-name")
    assert r.status_code == 502
    assert world.canaries["bearer"].lower() not in " ".join(r.headers).lower()
    assert leaks(world) == ["header"]


def test_a_credential_spelled_with_json_escapes_is_withheld(world: World) -> None:
    """`\\u0063\\u0061…` is the credential once the client reads the JSON."""
    r = get(world, "/api/escaped")
    assert r.status_code == 502
    assert leaks(world) == ["body"]


def test_an_answer_in_a_coding_the_gateway_cannot_decode_is_refused(world: World) -> None:
    """`gzip, gzip` is decoded once by nobody: the gateway could neither scan nor count it, so it is refused."""
    r = get(world, "/api/gzip-twice")
    assert r.status_code == 502
    assert r.content[:2] != b"\x1f\x8b"


def test_method_and_url_override_headers_never_reach_the_upstream(world: World) -> None:
    overrides = {"X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "DELETE", "X-Method-Override": "DELETE",
                 "X-Original-URL": "/api/admin", "X-Rewrite-URL": "/api/admin", "X-Real-IP": "10.0.0.1",
                 "X-Forwarded-Port": "443", "X-Forwarded-Prefix": "/admin", "True-Client-IP": "1.2.3.4"}  # fmt: skip
    r = get(world, "/api/record", **overrides, Accept="application/json")
    assert r.status_code == 200
    seen = world.hostile.seen[-1]
    assert not {k.lower() for k in overrides} & set(seen)
    assert seen["accept"] == "application/json"  # ordinary headers still go through


# ---------------------------------------------------------------------- the body decided is the body sent


def send_mail(world: World, headers: list[tuple[str, str]]) -> httpx.Response:
    to = [{"emailAddress": {"address": "x@elsewhere.example"}}]
    body = json.dumps({"message": {"subject": "numbers", "body": {"content": "q3"}, "toRecipients": to}})
    return httpx.post(f"{world.base}/proxy/m365/v1.0/me/sendMail", content=body.encode(),
                      headers=[("Authorization", f"Bearer {world.token()}"), *headers])  # fmt: skip


def test_a_body_read_for_the_decision_must_be_json_and_have_one_content_type(world: World) -> None:
    """sendMail to an outside address needs approval; sent as text/plain, or with two Content-Type headers
    (the first decided, the last forwarded), its recipients were invisible and it went out. Now refused."""
    assert send_mail(world, [("Content-Type", "application/json")]).json()["code"] == "approval_required"
    before = len(world.sim.outbox)
    for headers in ([("Content-Type", "text/plain")],
                    [("Content-Type", "text/plain"), ("Content-Type", "application/json")],
                    [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]):  # fmt: skip
        r = send_mail(world, headers)
        assert r.status_code == 400, headers
        assert r.headers["content-type"].startswith("application/problem+json")
    assert len(world.sim.outbox) == before


def test_batch_inner_requests_are_rebuilt_from_what_was_decided(world: World) -> None:
    """Members and headers the gateway does not decide (a `Method` beside `method`, an `Authorization`, a
    method override) are refused; a decided inner request is forwarded with only its decided members, and an
    inner answer's Location to another host (a pre-authenticated download) is not relayed."""
    auth = {"Authorization": f"Bearer {world.token('fakegraph')}"}
    url = f"{world.base}/proxy/fakegraph/v1.0/$batch"
    inner = {"id": "1", "method": "GET", "url": "/me/messages"}
    for extra in ({"Method": "DELETE"}, {"URL": "/users/bob@contoso.example/messages"},
                  {"headers": {"Authorization": "Bearer chosen"}}, {"headers": {"X-HTTP-Method-Override": "DELETE"}},
                  {"headers": {"Prefer": "a", "prefer": "b"}}):  # fmt: skip
        r = httpx.post(url, json={"requests": [{**inner, **extra}]}, headers=auth)
        assert r.status_code == 400, extra
    seen = len(world.hostile.seen)
    r = httpx.post(url, json={"requests": [{**inner, "headers": {"Prefer": "outlook.body-content-type=text"}}]},
                   headers=auth)  # fmt: skip
    assert r.status_code == 200
    forwarded = json.loads(world.hostile.seen[seen]["batch"])
    assert forwarded == {"requests": [{"id": "1", "method": "GET", "url": "/me/messages",
                                       "headers": {"prefer": "outlook.body-content-type=text"}}]}  # fmt: skip
    assert "tempauth" not in r.text
    assert r.json()["responses"][0]["headers"] == {}


# ---------------------------------------------------------------------- facts and owners


def test_an_anonymous_link_to_a_highly_confidential_file_never_leaves(real_world: World) -> None:
    """An anonymous sharing link is data leaving the tenant, as an outside invitation is: the default pack
    refuses it for a Highly Confidential file (no approval, not even break-glass), as it refuses the invite."""
    w = real_world
    drive = _gid("drive", w.sim.by_upn["alice@contoso.example"])
    item = next(i for i in w.sim.items[drive].values() if i.get("name") == "Board minutes.docx")
    auth = {"Authorization": f"Bearer {w.token(scopes='files:read files:share')}"}
    base = f"{w.base}/proxy/m365/v1.0/drives/{drive}/items/{item['id']}"
    shares = len(w.sim.shares)
    for body in ({"type": "view", "scope": "anonymous"}, {"type": "view"}):  # no scope: the tenant's default
        r = httpx.post(base + "/createLink", json=body, headers=auth)
        assert r.status_code == 403, body
        assert "external.highly-confidential-never" in r.json()["policy_ids"]
    assert len(w.sim.shares) == shares
    r = httpx.post(base + "/createLink", json={"type": "view", "scope": "organization"}, headers=auth)
    assert r.status_code == 201  # inside the tenant: allowed


def test_app_only_agents_cannot_reach_another_persons_drive_by_its_id(app_only_world: World) -> None:
    """With an app-only credential the pack confines the agent to its person's data. A path that names no
    user (/drives/{id}) had its owner taken to be the caller; now it has none, and is refused like
    /users/bob/drive."""
    w = app_only_world
    bob = w.sim.by_upn["bob@contoso.example"]
    auth = {"Authorization": f"Bearer {w.token(scopes='files:read')}"}
    for path in (
        "/v1.0/users/bob@contoso.example/drive/root/children",
        f"/v1.0/drives/{_gid('drive', bob)}/root/children",
    ):
        r = httpx.get(f"{w.base}/proxy/m365{path}", headers=auth)
        assert r.status_code == 403, path
        assert "app-only.own-resources-only" in r.json()["policy_ids"], path
    r = httpx.get(f"{w.base}/proxy/m365/v1.0/users/alice@contoso.example/drive/root/children", headers=auth)
    assert r.status_code == 200  # the person's own drive (Graph refuses /me to app-only tokens)


def test_a_list_answer_on_a_single_item_route_counts_every_item(world: World) -> None:
    """Graph's delta functions match single-item templates (users/{user}, messages/{id}); their answers are
    lists. Each item counts against the task's item budget (50 here): a 60-item answer is cut off."""
    for path in ("/v1.0/users/delta", "/v1.0/me/mailFolders/inbox/messages/delta"):
        r = get(world, path, upstream="fakegraph")
        assert r.status_code == 403, path
        assert r.json()["code"] == "budget_exceeded", path


def test_a_label_that_cannot_be_read_or_is_unknown_counts_as_highly_confidential(real_world: World) -> None:
    """The sensitivity lookup fails closed: an item whose label the gateway cannot read (here, no such item),
    or whose label it does not know, is decided as highly confidential, so it never leaves the tenant; an
    item labelled General is shared outside with no approval, as the pack allows."""
    w = real_world
    drive = _gid("drive", w.sim.by_upn["alice@contoso.example"])
    items = w.sim.items[drive]
    general = next(i for i in items.values() if (i.get("sensitivityLabel") or {}).get("displayName") == "General")
    auth = {"Authorization": f"Bearer {w.token(scopes='files:read files:share')}"}
    invite = {"recipients": [{"email": "partner@elsewhere.example"}], "roles": ["read"], "requireSignIn": True}

    def share(item_id: str) -> httpx.Response:
        url = f"{w.base}/proxy/m365/v1.0/drives/{drive}/items/{item_id}/invite"
        return httpx.post(url, json=invite, headers=auth)

    assert share(general["id"]).status_code == 200
    r = share("01NOSUCHITEM")
    assert r.status_code == 403
    assert "external.highly-confidential-never" in r.json()["policy_ids"]
    other = next(i for i in items.values() if i is not general and i.get("sensitivityLabel") and i.get("file"))
    other["sensitivityLabel"] = {**other["sensitivityLabel"], "displayName": "Project Nightjar"}
    r = share(other["id"])
    assert r.status_code == 403
    assert "external.highly-confidential-never" in r.json()["policy_ids"]


def test_concurrent_answers_of_one_task_cannot_overrun_its_budget_together(world: World) -> None:
    """Three reads of 20 items each in flight at once against a 50-item budget (answers large enough to
    arrive in pieces, so their relays interleave): each answer is counted as it is let through, so the
    third sees the first two and is refused; before, each checked the usage as it was before any of them
    was counted, and all three went out (60 items)."""
    import asyncio

    async def three() -> list[httpx.Response]:
        auth = {"Authorization": f"Bearer {world.token('hostile')}"}
        async with httpx.AsyncClient(timeout=30) as h:
            url = f"{world.base}/proxy/hostile/api/items?n=20&delay=0.3&pad=20000"  # 400 KB: read in pieces
            return list(await asyncio.gather(*(h.get(url, headers=auth) for _ in range(3))))

    codes = sorted(r.status_code for r in asyncio.run(three()))
    assert codes == [200, 200, 403]
    world.enforcer.drain()
    assert world.enforcer.usage.of(world.task_id)["items"] == 40


# ---------------------------------------------------------------------- replies


def _inbox(world: World) -> list[dict[str, object]]:
    uid = world.sim.by_upn["alice@contoso.example"]
    return list(world.sim.messages[uid].values())


def _reply(world: World, message_id: str, verb: str = "reply", body: dict[str, object] | None = None) -> dict:  # type: ignore[type-arg]
    """POST a reply through the gateway; the facts the decision saw."""
    from urllib.parse import quote

    auth = {"Authorization": f"Bearer {world.token(scopes='mail:read mail:reply')}"}
    url = f"{world.base}/proxy/m365/v1.0/me/messages/{quote(message_id, safe='')}/{verb}"
    before = len(world.enforcer.calls)
    httpx.post(url, json=body or {"comment": "Thanks"}, headers=auth)
    assert len(world.enforcer.calls) == before + 1
    return dict(world.enforcer.calls[-1].facts)


def test_a_reply_counts_the_recipients_the_body_does_not_name(world: World) -> None:
    """A reply goes to the original's sender, a reply-all to its recipients too, though the body names
    neither: the gateway reads them from the message (its own credential) and counts the ones outside the
    tenant. Before, a reply to a partner counted no recipient at all."""
    external = next(m for m in _inbox(world) if str(m["from"]["emailAddress"]["address"]).endswith("fabrikam.example"))  # type: ignore[index]
    internal = next(m for m in _inbox(world) if str(m["from"]["emailAddress"]["address"]).endswith("contoso.example"))  # type: ignore[index]
    facts = _reply(world, str(external["id"]))
    assert facts["external_recipients"] == 1
    assert facts["external_domains"] == ["fabrikam.example"]
    assert "pat@fabrikam.example" in facts["recipients"]
    assert _reply(world, str(internal["id"]))["external_recipients"] == 0
    # reply-all: the original's cc list is read as well
    internal["ccRecipients"] = [{"emailAddress": {"name": "Quinn", "address": "quinn@northwind.example"}}]
    assert _reply(world, str(internal["id"]))["external_recipients"] == 0
    facts = _reply(world, str(internal["id"]), "replyAll")
    assert facts["external_domains"] == ["northwind.example"]
    # recipients the body adds still count
    extra = {"comment": "+1", "message": {"toRecipients": [{"emailAddress": {"address": "pat@fabrikam.example"}}]}}
    assert _reply(world, str(internal["id"]), body=extra)["external_domains"] == ["fabrikam.example"]


def test_a_reply_whose_message_cannot_be_read_counts_as_leaving_the_tenant(world: World) -> None:
    """No such message, or an id holding `?` and `#` (`<id>?$select=id#`, which the upstream has no message
    of, though a lookup built from it unencoded reads message `<id>`): the recipients are unknown, so the
    reply counts as going outside the tenant. Ids are percent-encoded in the lookup, as when forwarded."""
    partner = next(m for m in _inbox(world) if str(m["from"]["emailAddress"]["address"]).endswith("fabrikam.example"))  # type: ignore[index]
    for mid in ("AAMkNOSUCHMESSAGE", f"{partner['id']}?$select=id#"):
        facts = _reply(world, mid)
        assert facts["external_recipients"] == 1, mid
        assert facts["external_domains"] == ["*"], mid


def test_a_reply_to_ones_own_sent_message_counts_its_recipients(world: World) -> None:
    """Replying to a message one sent goes to that message's recipients, not back to oneself: when the original
    is from the mailbox's owner, its To and Cc are counted. A reply to someone else's message does not count the
    other people on it (reply-all does)."""
    uid = world.sim.by_upn["alice@contoso.example"]
    when = datetime.now(UTC)
    alice, bob, pat = (
        ("Alice", "alice@contoso.example"),
        ("Bob", "bob@contoso.example"),
        ("Pat", "pat@fabrikam.example"),
    )
    store = world.sim._store_message
    sent = store(uid, "sentitems", subject="Offer", body="b", when=when, key="own", sender=alice, to=[pat])
    received = store(uid, "inbox", subject="Fwd", body="b", when=when, key="bob", sender=bob, to=[alice, pat])
    assert _reply(world, str(sent["id"]))["external_domains"] == ["fabrikam.example"]
    assert _reply(world, str(received["id"]))["external_recipients"] == 0
    assert _reply(world, str(received["id"]), "replyAll")["external_domains"] == ["fabrikam.example"]

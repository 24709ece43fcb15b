"""The HTTP gateway under attack: encoding tricks, undeclared hosts, redirects, credential read-back,
batches that hide a forbidden request, responses far over budget, and canary secrets everywhere."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from tests.http_gateway_world import World, build_world
from tether.store.schema.audit import audit_events


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from build_world(tmp_path, db_url)


def get(world: World, path: str, upstream: str = "m365", **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {world.token(upstream)}", **kw.pop("headers", {})}  # type: ignore[dict-item]
    # send the target exactly as written: httpx would otherwise normalise some of it
    url = httpx.URL(world.base + "/proxy/" + upstream + path)
    req = httpx.Request(str(kw.pop("method", "GET")), url, headers=headers, **kw)  # type: ignore[arg-type]
    req.url = req.url.copy_with(raw_path=("/proxy/" + upstream + path).encode())
    with httpx.Client() as c:
        return c.send(req)


def events(world: World, kind: str) -> list[dict[str, object]]:
    with world.services.db.read() as conn:
        rows = conn.execute(
            select(audit_events.c.body).where(audit_events.c.type == kind).order_by(audit_events.c.seq)
        ).all()
    return [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]


@pytest.mark.parametrize(
    "path",
    [
        "/v1.0/me/messages/%2fusers%2fbob@contoso.example",  # encoded slash
        "/v1.0/me/messages/..%2f..%2fusers",  # encoded slash inside a dot segment
        "/v1.0/me;x=1/messages",  # path parameter
        "/v1.0/me/messages/%252e%252e",  # double encoding
        "/v1.0/me/messages/%5c..%5cusers",  # backslash
        "/v1.0/me/messages/%00",  # NUL
        "/v1.0/%2e%2e/%2e%2e/%2e%2e/etc",  # climbs above the root
    ],
)
def test_encoding_tricks_are_refused_before_anything_is_forwarded(world: World, path: str) -> None:
    """Encoded slashes, `;`, double encoding, backslashes, NUL and escaping dot segments: 400, upstream untouched."""
    before = world.sim.requests
    r = get(world, path)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "path_refused"
    assert world.sim.requests == before
    assert world.enforcer.calls == []


def test_dot_segments_are_resolved_and_decided_as_the_route_they_reach(world: World) -> None:
    """`%2e%2e` climbs to Bob's mailbox: the decision names Bob's mailbox, and the upstream refuses Alice's token."""
    r = get(world, "/v1.0/me/messages/%2e%2e/%2e%2e/users/bob@contoso.example/messages")
    call = world.enforcer.calls[-1]
    assert (call.action, call.resource.type, call.resource.id) == ("mail:read", "Mailbox", "bob@contoso.example")
    assert call.summary["path"] == "/v1.0/users/bob@contoso.example/messages"
    assert r.status_code == 403  # the simulator: a delegated token reaches only its own mailbox


def test_duplicate_slashes_and_case_reach_the_same_route(world: World) -> None:
    """`//` collapses and literal segments match case-insensitively, so tricks land on the same decision."""
    for path in ("//v1.0//me///messages", "/V1.0/ME/Messages", "/v1.0/./me/messages/"):
        r = get(world, path)
        assert r.status_code == 200, (path, r.text)
        assert world.enforcer.calls[-1].action == "mail:read"
        assert world.enforcer.calls[-1].summary["route"] == "messages.list"


def test_an_unmapped_route_is_denied_and_audited(world: World) -> None:
    """A path the route map does not know (item permissions) is denied without touching the upstream."""
    before = world.sim.requests
    r = get(world, "/v1.0/me/drive/items/x/permissions")
    assert r.status_code == 403
    assert r.json()["code"] == "route_not_mapped"
    assert world.sim.requests == before
    assert any(e["policy_ids"] == ["tether:route-unmapped"] for e in events(world, "policy.decided"))


def test_an_undeclared_upstream_is_refused(world: World) -> None:
    """/proxy/<anything not declared> is a 404, whatever the token says."""
    r = get(world, "/v1.0/me/messages", upstream="evil")
    assert r.status_code == 404
    assert r.json()["code"] == "unknown_upstream"


def test_a_token_for_another_upstream_is_refused(world: World) -> None:
    """A task token whose audience is /proxy/hostile does not open /proxy/m365."""
    r = httpx.get(f"{world.base}/proxy/m365/v1.0/me/messages",
                  headers={"Authorization": f"Bearer {world.token('hostile')}"})  # fmt: skip
    assert r.status_code == 401
    assert "resource_metadata" in r.headers["www-authenticate"]


def test_a_request_without_a_token_is_refused(world: World) -> None:
    """No bearer token: 401 before any mapping."""
    r = httpx.get(f"{world.base}/proxy/m365/v1.0/me/messages")
    assert r.status_code == 401


def test_a_redirect_to_another_host_is_not_followed_and_gets_no_credential(world: World) -> None:
    """The upstream redirects to a host that is not allowlisted: 502, and that host never hears from us."""
    r = get(world, "/api/redirect-away", upstream="hostile")
    assert r.status_code == 502
    assert not any("steal" in str(h) for h in world.hostile.seen)
    assert world.hostile.seen == []


def test_a_same_host_redirect_goes_back_through_the_gateway(world: World) -> None:
    """A redirect within the upstream is handed to the client as a gateway URL, to be decided again."""
    r = get(world, "/api/redirect-home", upstream="hostile")
    assert r.status_code == 302
    assert r.headers["location"] == f"{world.base}/proxy/hostile/api/items"


@pytest.mark.parametrize("endpoint", ["/api/echo", "/api/echo-b64", "/api/echo-gzip", "/api/echo-split",
                                      "/api/header-leak"])  # fmt: skip
def test_a_response_carrying_the_injected_credential_is_withheld(world: World, endpoint: str) -> None:
    """Echoed raw, base64, gzip-compressed, split across chunks, or in a header: 502 and credential.leak_blocked."""
    if endpoint == "/api/echo-split":  # headers already sent when the second half arrives: the stream is cut
        with pytest.raises(httpx.RemoteProtocolError):
            get(world, endpoint, upstream="hostile")
    else:
        r = get(world, endpoint, upstream="hostile", headers={"X-Echo": "Authorization"})
        assert world.canaries["bearer"] not in r.text
        assert r.status_code == 502
        assert r.json()["code"] == "credential_leak_blocked"
    assert events(world, "credential.leak_blocked")


def test_an_url_encoded_api_key_is_caught(world: World) -> None:
    """An API-key credential echoed percent-encoded in a body is caught too."""
    r = get(world, "/api/echo-url", upstream="keyed")
    assert r.status_code == 502
    assert r.json()["code"] == "credential_leak_blocked"


def test_the_callers_authorization_never_reaches_the_upstream(world: World) -> None:
    """The task token is stripped; only the injected credential goes out (here refused, as it echoes)."""
    token = world.token("hostile")
    get(world, "/api/echo", upstream="hostile", headers={"Proxy-Authorization": "x", "Cookie": "a=b"})
    seen = world.hostile.seen[-1]
    assert token not in json.dumps(seen)
    assert "cookie" not in seen
    assert "proxy-authorization" not in seen
    assert seen["authorization"] == f"Bearer {world.canaries['bearer']}"


def test_a_batch_hiding_a_forbidden_request_forwards_only_what_is_allowed(world: World) -> None:
    """$batch with a mail read and a send outside the tenant: the read runs, the send is answered 403 by Tether."""
    before = len(world.sim.outbox)
    batch = {"requests": [
        {"id": "1", "method": "GET", "url": "/me/messages?$top=2"},
        {"id": "2", "method": "POST", "url": "/me/sendMail", "headers": {"Content-Type": "application/json"},
         "body": {"message": {"subject": "numbers",
                              "toRecipients": [{"emailAddress": {"address": "x@evil.example"}}]}}},
        {"id": "3", "method": "GET", "url": "/me/drive/items/x/permissions"},
        {"id": "4", "method": "POST", "url": "/me/%2e%2e/users/bob@contoso.example/sendMail", "dependsOn": ["2"],
         "body": {"message": {"toRecipients": [{"emailAddress": {"address": "x@evil.example"}}]}}},
    ]}  # fmt: skip
    r = httpx.post(f"{world.base}/proxy/m365/v1.0/$batch", json=batch,
                   headers={"Authorization": f"Bearer {world.token()}"})  # fmt: skip
    assert r.status_code == 200, r.text
    by_id = {x["id"]: x for x in r.json()["responses"]}
    assert by_id["1"]["status"] == 200
    assert len(by_id["1"]["body"]["value"]) == 2
    assert by_id["2"]["status"] == 403
    assert by_id["2"]["body"]["code"] == "approval_required"
    assert by_id["3"]["status"] == 403
    assert by_id["3"]["body"]["code"] == "route_not_mapped"
    assert by_id["4"]["status"] == 424
    assert len(world.sim.outbox) == before
    assert [c.action for c in world.enforcer.calls] == ["mail:read", "mail:send"]


def test_a_response_far_over_the_byte_budget_is_cut_off(world: World) -> None:
    """A 5 MiB stream against a 1 MB task budget: the stream is cut and budget.exceeded recorded."""
    try:
        r = get(world, "/api/big", upstream="hostile")
    except httpx.RemoteProtocolError:  # cut mid-stream: the client sees an incomplete chunked body
        pass
    else:  # or refused before the first byte went out
        assert r.status_code == 403, r.status_code
    assert events(world, "budget.exceeded")


def test_a_json_answer_over_the_item_budget_is_refused(world: World) -> None:
    """60 items against a budget of 50: 403 budget_exceeded, the items are not returned."""
    r = get(world, "/api/items?n=60", upstream="hostile")
    assert r.status_code == 403
    assert r.json()["code"] == "budget_exceeded"
    assert events(world, "budget.exceeded")


def test_a_json_answer_larger_than_one_read_arrives_whole(world: World) -> None:
    """A JSON answer of several hundred KB (many socket reads) is inspected and forwarded whole, not its first part."""
    r = get(world, "/api/items?n=40000", upstream="keyed")
    assert r.status_code == 200
    assert len(r.content) > 300_000
    assert len(r.json()["value"]) == 40000


def test_pre_authenticated_download_urls_are_stripped(world: World) -> None:
    """driveItem JSON loses @microsoft.graph.downloadUrl: downloads go through the gateway."""
    r = get(world, "/v1.0/me/drive/root/children")
    assert r.status_code == 200
    assert "downloadUrl" not in r.text
    assert r.json()["value"][0]["name"]


def test_request_bodies_over_the_route_cap_are_refused_before_deciding(world: World) -> None:
    """A body larger than the route's cap is 413 and never decided or forwarded."""
    headers = {"Authorization": f"Bearer {world.token()}", "Content-Type": "application/json"}
    r = httpx.post(f"{world.base}/proxy/m365/v1.0/me/events", content=b"{" + b" " * 5_000_000 + b"}", headers=headers)
    assert r.status_code == 413
    assert world.enforcer.calls == []


def forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
            quote(secret, safe="")]  # fmt: skip


def test_canary_credentials_appear_in_no_log_error_audit_row_metric_export_or_response(
    world: World, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Exercise every path, then look for each upstream's canary (raw, base64, URL-encoded) in every output."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for path, up in [
        ("/v1.0/me/messages", "m365"),
        ("/v1.0/me/drive/items/nope/invite", "m365"),
        ("/api/echo", "hostile"),
        ("/api/echo-b64", "hostile"),
        ("/api/echo-url", "keyed"),
        ("/api/redirect-away", "hostile"),
        ("/api/items?n=99", "hostile"),
        ("/v1.0/%2f", "m365"),
    ]:
        r = get(world, path, upstream=up, method="POST" if path.endswith("invite") else "GET",
                content=b'{"recipients":[{"email":"x@evil.example"}]}' if path.endswith("invite") else None,
                headers={"Content-Type": "application/json"})  # fmt: skip
        seen.append(r.text + json.dumps(dict(r.headers)))
    uid = world.sim.by_upn["alice@contoso.example"]
    seen.append(get(world, f"/v1.0/users/{uid}/drive/root/children").text)
    seen.append(httpx.get(f"{world.base}/metrics").text)
    with world.services.db.read() as conn:
        seen.append(
            json.dumps(
                [list(map(str, r)) for r in conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()]
            )
        )
    from typer.testing import CliRunner

    from tether.cli.main import app

    env = {"TETHER_DATABASE_URL": world.services.settings.url}
    listing = CliRunner().invoke(app, ["credentials", "list", "--json", "--data-dir",
                                       str(world.services.settings.data_dir)], env=env)  # fmt: skip
    assert listing.exit_code == 0, listing.output
    seen.append(listing.output)
    seen.append(repr(world.services.extras["vault"].open("graph-obo")))
    out, err = capfd.readouterr()
    seen += [out, err, caplog.text]
    blob = "\n".join(seen)
    for name, canary in world.canaries.items():
        for form in forms(canary):
            assert form not in blob, f"canary {name} leaked as {form[:12]}…"
    assert world.enforcer.calls  # the paths above were really exercised

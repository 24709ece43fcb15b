"""The MCP gateway end to end: the official `mcp` SDK client, through Tether's /mcp, to
`mcp-server-git` on temporary repositories — reads allowed, a commit held for approval and
then run once approved, and the attacks the issue names."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.mcp_world import WORKSPACE_RULE, WRITE_RULE, World, build_world

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from build_world(tmp_path, db_url)


@asynccontextmanager
async def client(w: World, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token or w.token()}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(w.url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=30) as session,
    ):
        await session.initialize()
        yield session


async def eventually(probe: Any, timeout: float = 5.0) -> Any:
    """The probe's first truthy answer (outcomes are recorded just after the answer leaves)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := probe()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert value
    return value


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def meta_of(result: Any) -> dict[str, Any]:
    meta = result.meta or {}
    return dict(meta.get("io.tether/refusal") or {})


async def test_sdk_client_reads_through_the_gateway(world: World) -> None:
    """Pinned read tools are listed namespaced and a git_status call reaches mcp-server-git."""
    await world.pin_all()
    async with client(world) as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert {"git__git_status", "git__git_log", "twin__git_status"} <= names
        result = await s.call_tool("git__git_status", {"repo_path": str(world.repo)})
        assert not result.is_error, text_of(result)
        assert "working tree clean" in text_of(result)
    completed = await eventually(lambda: world.events("tool.completed"))
    assert completed[-1]["action"] == "git:read"
    decided = world.events("policy.decided")
    assert decided[-1]["decision"] == "allow"


async def test_commit_needs_approval_then_succeeds_once(world: World) -> None:
    """A commit is held with an approval_id; after the sponsor approves, the identical call runs once."""
    await world.pin_all()
    (world.repo / "new.txt").write_text("x\n")
    subprocess.run(["git", "add", "new.txt"], cwd=world.repo, check=True)
    args = {"repo_path": str(world.repo), "message": "add new.txt"}
    async with client(world) as s:
        held = await s.call_tool("git__git_commit", args)
        assert held.is_error
        refusal = meta_of(held)
        assert refusal["effect"] == "approval_required"
        assert refusal["policy_ids"] == [WRITE_RULE]
        approval_id = refusal["approval_id"]
        assert approval_id in text_of(held)
        assert world.services.approvals is not None
        await world.services.approvals.decide(world.sponsor, approval_id, approve=True, reason="fine")
        done = await s.call_tool("git__git_commit", args, meta={"io.tether/approval": approval_id})
        assert not done.is_error, text_of(done)
        log = subprocess.run(["git", "log", "--oneline"], cwd=world.repo, capture_output=True, text=True).stdout
        assert "add new.txt" in log
        again = await s.call_tool("git__git_commit", args, meta={"io.tether/approval": approval_id})
        assert again.is_error
        assert "approval" in text_of(again).lower()


async def test_approval_replayed_with_different_arguments_is_refused(world: World) -> None:
    """An approval binds the exact arguments: a retry with another message is refused."""
    await world.pin_all()
    args = {"repo_path": str(world.repo), "message": "harmless"}
    async with client(world) as s:
        held = await s.call_tool("git__git_commit", args)
        approval_id = meta_of(held)["approval_id"]
        assert world.services.approvals is not None
        await world.services.approvals.decide(world.sponsor, approval_id, approve=True, reason="ok")
        evil = await s.call_tool("git__git_commit", {**args, "message": "something else"},
                                 meta={"io.tether/approval": approval_id})  # fmt: skip
        assert evil.is_error
        assert meta_of(evil).get("reason") == "approval_invalid"


async def test_arguments_crafted_to_escape_the_resource_mapping_are_denied(world: World) -> None:
    """`repo/../other` is normalised before the decision, so the policy sees the other repository."""
    await world.pin_all()
    sneaky = str(world.repo) + "/../other"
    async with client(world) as s:
        r = await s.call_tool("git__git_status", {"repo_path": sneaky})
        assert r.is_error
        assert meta_of(r)["policy_ids"] == [WORKSPACE_RULE]
        r = await s.call_tool("git__git_status", {"repo_path": {"$ne": ""}})
        assert r.is_error
        assert meta_of(r)["reason"] == "mapping_failed"
        r = await s.call_tool("git__git_status", {})
        assert r.is_error
        assert meta_of(r)["reason"] == "mapping_failed"
    decided = world.events("policy.decided")
    assert decided[0]["resource"]["id"] == str(world.other_repo)


async def test_colliding_tool_names_never_shadow_each_other(world: World) -> None:
    """git__git_status and twin__git_status reach their own servers; the twin is an unmapped mcp:call."""
    await world.pin_all()
    async with client(world) as s:
        mine = await s.call_tool("git__git_status", {"repo_path": str(world.repo)})
        assert not mine.is_error
        twin = await s.call_tool("twin__git_status", {"repo_path": str(world.other_repo)})
        assert not twin.is_error, text_of(twin)
    decided = [(e["action"], e["resource"]["type"], e["resource"]["id"]) for e in world.events("policy.decided")]
    assert decided == [("git:read", "Repository", str(world.repo)), ("mcp:call", "Tool", "twin/git_status")]
    assert decided[1][0] == "mcp:call"  # unmapped; its read-only hint comes from the pinned definition


async def test_unpinned_and_changed_tools_are_hidden_and_refused(world: World) -> None:
    """Nothing is listed before `tether mcp pin`; a definition that changed is hidden, refused and audited."""
    async with client(world) as s:
        assert (await s.list_tools()).tools == []
        r = await s.call_tool("git__git_status", {"repo_path": str(world.repo)})
        assert r.is_error
        assert meta_of(r)["reason"] == "tool_not_pinned"
    await world.pin_all()
    gw = world.gateway
    store = gw.pin_store
    _pin, definition = store.all()[("git", "git_status")]
    store.approve("test", "git", "git_status", "0" * 64, {**definition, "description": "older text"})
    gw.pins_changed()
    gw._tools.clear()
    async with client(world) as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert "git__git_status" not in names
        assert "git__git_log" in names
        r = await s.call_tool("git__git_status", {"repo_path": str(world.repo)})
        assert r.is_error
        assert "changed since it was approved" in text_of(r)
    changed = world.events("tool.pin_changed")
    assert changed
    assert changed[0]["detail"]["tool"] == "git_status"


async def test_tool_call_without_token_gets_401_with_resource_metadata(world: World) -> None:
    """No token: 401 and a WWW-Authenticate naming the RFC 9728 metadata, which names Tether as issuer."""
    async with httpx.AsyncClient() as h:
        r = await h.post(world.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status_code == 401
        meta_url = f"{world.base}/.well-known/oauth-protected-resource/mcp"
        assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{meta_url}"'
        meta = (await h.get(meta_url)).json()
        assert meta["resource"] == world.url
        assert meta["authorization_servers"] == [world.services.settings.issuer]
        assert meta["bearer_methods_supported"] == ["header"]
        assert (await h.get(f"{world.base}/.well-known/oauth-protected-resource")).json() == meta


async def test_token_for_another_audience_is_refused(world: World) -> None:
    """A token minted for /proxy/m365 is useless at /mcp."""
    tok = world.token(aud=f"{world.base}/proxy/m365")
    async with httpx.AsyncClient() as h:
        r = await h.post(world.url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                         headers={"Authorization": f"Bearer {tok}"})  # fmt: skip
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def open_session(h: httpx.AsyncClient, world: World, auth: dict[str, str]) -> str:
    """`initialize` on /mcp with `auth`; the new session's id."""
    init = await h.post(world.url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                        headers=auth)  # fmt: skip
    return str(init.headers["mcp-session-id"])


async def test_another_tasks_token_cannot_use_a_session_or_an_approval(world: World) -> None:
    """A session belongs to its task: another task's token gets 404 on it, and cannot consume its approval."""
    await world.pin_all()
    args = {"repo_path": str(world.repo), "message": "m"}
    async with client(world) as s:
        approval_id = meta_of(await s.call_tool("git__git_commit", args))["approval_id"]
    assert world.services.approvals is not None
    await world.services.approvals.decide(world.sponsor, approval_id, approve=True, reason="ok")
    other = world.token(task_id=world.new_task())
    async with httpx.AsyncClient() as h:
        sid = await open_session(h, world, {"Authorization": f"Bearer {world.token()}"})
        r = await h.post(world.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                         headers={"Authorization": f"Bearer {other}", "Mcp-Session-Id": sid})  # fmt: skip
        assert r.status_code == 404
    async with client(world, other) as s:
        r2 = await s.call_tool("git__git_commit", args, meta={"io.tether/approval": approval_id})
        assert r2.is_error
        assert meta_of(r2)["reason"] == "approval_invalid"


async def test_session_ids_are_signed_so_any_process_accepts_them_and_nobody_forges_them(world: World) -> None:
    """`tether serve --workers`: a session opened in one process works in another (same key, no shared
    memory); a session id edited to name another task, or signed with another key, is refused; an ended
    session stays ended here."""
    import base64

    def b64(doc: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).rstrip(b"=").decode()

    other_task = world.new_task()
    auth = {"Authorization": f"Bearer {world.token()}"}
    other = {"Authorization": f"Bearer {world.token(task_id=other_task)}"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with httpx.AsyncClient() as h:
        sid = await open_session(h, world, auth)
        assert all(0x21 <= ord(c) <= 0x7E for c in sid)  # MCP: visible ASCII only
        world.gateway.sessions.clear()  # as if this request reached a process that never saw the session
        r = await h.post(world.url, json=listing, headers={**auth, "Mcp-Session-Id": sid})
        assert r.status_code == 200
        assert "result" in r.json()

        payload, _, mac = sid[4:].partition(".")
        doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        doc[2] = other_task  # the other task's id, under the original MAC
        forged = f"mcs_{b64(doc)}.{mac}"
        world.gateway.sessions.clear()
        r = await h.post(world.url, json=listing, headers={**other, "Mcp-Session-Id": forged})
        assert r.status_code == 404
        import hashlib
        import hmac
        import secrets

        body = b64(doc)
        mac2 = base64.urlsafe_b64encode(hmac.new(secrets.token_bytes(32), body.encode(), hashlib.sha256).digest())
        forged = f"mcs_{body}.{mac2.rstrip(b'=').decode()}"
        r = await h.post(world.url, json=listing, headers={**other, "Mcp-Session-Id": forged})
        assert r.status_code == 404
        for junk in ("mcs_", "mcs_.", "mcs_x.y", "mcs_" + "A" * 5000, "nope"):
            r = await h.post(world.url, json=listing, headers={**auth, "Mcp-Session-Id": junk})
            assert r.status_code == 404, junk

        r = await h.delete(world.url, headers={**auth, "Mcp-Session-Id": sid})
        assert r.status_code == 200
        r = await h.post(world.url, json=listing, headers={**auth, "Mcp-Session-Id": sid})
        assert r.status_code == 404


async def test_a_session_ended_on_one_process_is_refused_by_the_others(world: World) -> None:
    """DELETE records the end in the revocations table, so another process (its own revocation state, fed
    from the database by its watcher) refuses the id as well: cached or verified afresh. Until its watcher
    reads the row it still accepts it, as it would a revoked token (the poll interval bounds both)."""
    from tether.store.tokens import SqlTokenStore
    from tether.tokens import EndedSessions, RevocationState, RevocationWatcher

    gw = world.gateway
    store = SqlTokenStore(world.services.db)
    elsewhere = RevocationState()
    watcher = RevocationWatcher(store, elsewhere)
    watcher.refresh()
    here = gw._ended_anywhere
    there = EndedSessions(store, elsewhere)
    auth = {"Authorization": f"Bearer {world.token()}"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    async def listed(sid: str, ended: Any) -> int:
        gw._ended_anywhere = ended
        gw._ended.clear()  # what this process ended by itself: nothing, in the other one
        r = await h.post(world.url, json=listing, headers={**auth, "Mcp-Session-Id": sid})
        return r.status_code

    async with httpx.AsyncClient() as h:
        sid = await open_session(h, world, auth)
        assert await listed(sid, there) == 200
        gw._ended_anywhere = here
        r = await h.delete(world.url, headers={**auth, "Mcp-Session-Id": sid})
        assert r.status_code == 200
        assert await listed(sid, here) == 404
        assert await listed(sid, there) == 200  # the other process has not read the row yet (and caches the id)
        watcher.refresh()
        assert await listed(sid, there) == 404  # cached there: refused once the row is read
        gw.sessions.clear()
        assert await listed(sid, there) == 404  # verified afresh: refused too
        fresh = RevocationState()  # a process started after the DELETE loads it at once
        RevocationWatcher(store, fresh).refresh()
        assert await listed(sid, EndedSessions(store, fresh)) == 404
        gw._ended_anywhere = here


async def test_a_session_end_that_cannot_be_recorded_ends_nothing(world: World) -> None:
    """If the end cannot be recorded for every process, DELETE says so (503) and the session lives on whole,
    so the client may try again; it is never ended on one process and alive on the others."""

    class Unwritable:
        def ended(self, key: str) -> bool:
            return False

        def end(self, key: str) -> None:
            raise OSError("database unavailable")

    gw = world.gateway
    here = gw._ended_anywhere
    auth = {"Authorization": f"Bearer {world.token()}"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with httpx.AsyncClient() as h:
        sid = await open_session(h, world, auth)
        gw._ended_anywhere = Unwritable()
        try:
            r = await h.delete(world.url, headers={**auth, "Mcp-Session-Id": sid})
            assert r.status_code == 503
            assert "try again" in r.text
            r = await h.post(world.url, json=listing, headers={**auth, "Mcp-Session-Id": sid})
            assert r.status_code == 200
        finally:
            gw._ended_anywhere = here
        r = await h.delete(world.url, headers={**auth, "Mcp-Session-Id": sid})
        assert r.status_code == 200


async def test_browser_origin_not_on_the_allowlist_gets_403(world: World) -> None:
    """DNS rebinding: a page on another origin cannot drive /mcp even with a token."""
    async with httpx.AsyncClient() as h:
        headers = {"Origin": "http://evil.example", "Authorization": f"Bearer {world.token()}"}
        r = await h.post(world.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
    assert r.status_code == 403


async def test_malformed_and_oversized_json_rpc_get_json_rpc_errors(world: World) -> None:
    """Junk, batches, duplicate keys, text that is not Unicode and oversized bodies get JSON-RPC errors,
    and the gateway lives on."""
    auth = {"Authorization": f"Bearer {world.token()}", "Content-Type": "application/json"}
    async with httpx.AsyncClient() as h:
        cases = [
            (b"{not json", 400, -32700),
            (b"[]", 400, -32600),
            (b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}', 400, -32700),
            (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, -32600),
            (b"[" * 100_000, 400, -32700),
            (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "y" * 2_000_000}}).encode(),
             413, -32600),
        ]  # fmt: skip
        for body, status, code in cases:
            r = await h.post(world.url, content=body, headers=auth)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), body[:40]
        sid = {"Mcp-Session-Id": await open_session(h, world, auth)}
        await world.pin_all()
        lone = b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"git__git_status","arguments":'
        r = await h.post(world.url, content=lone + b'{"repo_path":"\\udc00"}}}', headers={**auth, **sid})
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32700)  # a lone surrogate is not Unicode
        r = await h.post(world.url, json={"jsonrpc": "2.0", "id": 2, "method": "nope"}, headers={**auth, **sid})
        assert r.json()["error"]["code"] == -32601
        r = await h.post(world.url, json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": 5}},
                         headers={**auth, **sid})  # fmt: skip
        assert r.json()["error"]["code"] == -32602
        r = await h.post(world.url, json={"jsonrpc": "2.0", "id": 4, "method": "ping"}, headers={**auth, **sid})
        assert r.json() == {"jsonrpc": "2.0", "id": 4, "result": {}}


async def test_prompt_meta_is_recorded_and_stripped(world: World) -> None:
    """io.tether/prompt becomes the audited prompt digest and never reaches the upstream."""
    await world.pin_all()
    async with client(world) as s:
        r = await s.call_tool("git__git_log", {"repo_path": str(world.repo)},
                              meta={"io.tether/prompt": "show me the history", "trace": "keep"})  # fmt: skip
        assert not r.is_error
    requested = world.events("tool.requested")[-1]
    assert requested["prompt_digest"]
    assert requested["detail"]["prompt_source"] == "agent_asserted"


async def test_a_hop_names_the_tool_result_that_led_to_it_and_nothing_else(world: World) -> None:
    """Each result carries the id of its tool.completed event (`io.tether/event`); a later call of the task that
    names it in `io.tether/parent` is recorded with that parent, so the hops read as one story. A parent that is
    another task's result, or an event that is no tool result, or not an event id at all, is refused (a deny on
    record, nothing forwarded). The id itself names its task (a MAC under the session key), so any process checks
    it, with no state, before its lazy record is even committed."""
    await world.pin_all()
    args = {"repo_path": str(world.repo)}
    async with client(world) as s:
        first = await s.call_tool("git__git_status", args)
        assert not first.is_error
        parent = (first.meta or {})["io.tether/event"]
        second = await s.call_tool("git__git_log", args, meta={"io.tether/parent": parent})
        assert not second.is_error, text_of(second)
    completed = await eventually(lambda: [e for e in world.events("tool.completed") if e["id"] == parent])
    assert completed[0]["action"] == "git:read"
    assert world.events("tool.requested")[-1]["parent_id"] == parent

    decided_id = world.events("policy.decided")[-1]["id"]  # an event of the task, but no tool result
    async with client(world, world.token(task_id=world.new_task())) as other:
        theirs = (await other.call_tool("git__git_status", args)).meta["io.tether/event"]  # type: ignore[index]
    requests = len(world.events("tool.requested"))
    async with client(world) as s:
        for bad in (theirs, decided_id, "evt_nosuchevent", "not-an-id", 7):
            r = await s.call_tool("git__git_log", args, meta={"io.tether/parent": bad})
            assert r.is_error, bad
            assert meta_of(r)["reason"] == "parent_invalid", bad
        assert len(world.events("tool.requested")) == requests  # none was decided, so none was forwarded
        denies = [e for e in world.events("policy.decided") if e["policy_ids"] == ["tether:parent-invalid"]]
        assert len(denies) == 5
        assert {e["action"] for e in denies} == {"mcp:call"}
        # a parent that is well formed but was not minted for this task, or altered in one character
        forged = parent[:-1] + ("0" if parent[-1] != "0" else "1")
        r = await s.call_tool("git__git_log", args, meta={"io.tether/parent": forged})
        assert meta_of(r)["reason"] == "parent_invalid"
        r = await s.call_tool("git__git_log", args, meta={"io.tether/parent": parent})
        assert not r.is_error, text_of(r)


async def test_an_outcome_lost_in_a_crash_is_recovered_under_the_id_its_result_was_given(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answers, then dies before the result's lazy tool.completed is committed. Start-up recovery
    writes the outcome "unknown" under the id the client was given in `io.tether/event`, so the next hop, which
    names it as its parent, still leads to an event in the log."""
    from tether.audit.query import recover
    from tether.audit.results import namer
    from tether.crypto import load_master_key

    await world.pin_all()
    args = {"repo_path": str(world.repo)}
    monkeypatch.setattr(world.gateway, "_defer_completed", lambda *a, **k: None)  # lost with the process
    async with client(world) as s:
        first = await s.call_tool("git__git_status", args)
        assert not first.is_error, text_of(first)
    given = (first.meta or {})["io.tether/event"]
    decided = world.events("policy.decided")[-1]
    assert not [e for e in world.events("tool.completed") if e["parent_id"] == decided["id"]]
    monkeypatch.undo()

    assert recover(world.services.db, name_result=namer(load_master_key(world.services.settings))) == 1
    recovered = [e for e in world.events("tool.completed") if e["parent_id"] == decided["id"]]
    assert [(e["id"], e["outcome"]) for e in recovered] == [(given, {"status": "unknown"})]
    async with client(world) as s:
        second = await s.call_tool("git__git_log", args, meta={"io.tether/parent": given})
        assert not second.is_error, text_of(second)
    assert world.events("tool.requested")[-1]["parent_id"] == given


@pytest.mark.parametrize("transport", ["sdk", "lean"])
async def test_unreachable_upstream_is_a_clear_tool_error_not_a_hang(
    tmp_path: Path, db_url: str, transport: str
) -> None:
    """A URL upstream nobody listens on gives a prompt error rather than a hang."""
    from tests.conftest import free_port

    servers = {"gone": {"url": f"http://127.0.0.1:{free_port()}/mcp", "connect_timeout": 2, "timeout": 2,
                        "transport": transport}}  # fmt: skip
    for w in build_world(tmp_path, db_url, servers=servers):
        async with client(w) as s:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert (await s.list_tools()).tools == []
            r = await s.call_tool("gone__anything", {})
            assert r.is_error
            assert "unavailable" in text_of(r)
            assert loop.time() - t0 < 10


CRASHY = '''
import os
from mcp.server.mcpserver import MCPServer

server = MCPServer("crashy")


@server.tool()
def hello(name: str) -> str:
    """Greet."""
    return f"hello {name} from {os.getpid()}"


@server.tool()
def stall() -> str:
    """Never answer in time."""
    import time

    time.sleep(60)
    return "late"


@server.tool()
def crash() -> str:
    """Exit at once."""
    os._exit(3)


@server.resource("notes://today")
def today() -> str:
    """Today's notes."""
    return "buy milk"


@server.prompt()
def review(topic: str) -> str:
    """Ask for a review."""
    return f"Please review {topic}"


server.run("stdio")
'''


async def test_a_crashed_stdio_upstream_is_restarted(tmp_path: Path, db_url: str) -> None:
    """When the upstream process dies mid-call the caller gets a tool error, and the next call runs on a new process."""
    import sys

    script = tmp_path / "crashy.py"
    script.write_text(CRASHY)
    servers = {"crashy": {"command": sys.executable, "args": [str(script)], "timeout": 10}}
    for w in build_world(tmp_path / "w", db_url, servers=servers, allow_all=True):
        await w.pin_all()
        async with client(w) as s:
            first = text_of(await s.call_tool("crashy__hello", {"name": "a"}))
            died = await s.call_tool("crashy__crash", {})
            assert died.is_error
            again = await s.call_tool("crashy__hello", {"name": "b"})
            assert not again.is_error, text_of(again)
            assert text_of(again).split()[-1] != first.split()[-1]  # another process


async def test_a_stalled_upstream_call_times_out_with_a_tool_error(tmp_path: Path, db_url: str) -> None:
    """A tool that never answers is cut off at the server's timeout; the gateway keeps serving."""
    import sys

    script = tmp_path / "crashy.py"
    script.write_text(CRASHY)
    servers = {"crashy": {"command": sys.executable, "args": [str(script)], "timeout": 2}}
    for w in build_world(tmp_path / "w", db_url, servers=servers, allow_all=True):
        await w.pin_all()
        async with client(w) as s:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            r = await s.call_tool("crashy__stall", {})
            assert r.is_error
            assert "did not answer" in text_of(r)
            assert loop.time() - t0 < 6
            assert not (await s.call_tool("crashy__hello", {"name": "c"})).is_error


async def test_resources_and_prompts_are_decided_as_reads(tmp_path: Path, db_url: str) -> None:
    """resources/read and prompts/get go through policy as mcp:read; without that scope they are refused."""
    import sys

    from mcp import MCPError

    script = tmp_path / "crashy.py"
    script.write_text(CRASHY)
    servers = {"crashy": {"command": sys.executable, "args": [str(script)], "timeout": 10}}
    for w in build_world(tmp_path / "w", db_url, servers=servers):
        async with client(w) as s:
            assert [str(r.uri) for r in (await s.list_resources()).resources] == ["notes://today"]
            text = (await s.read_resource("notes://today")).contents[0]
            assert getattr(text, "text", "") == "buy milk"
            prompt = await s.get_prompt("crashy__review", {"topic": "the budget"})
            assert "the budget" in getattr(prompt.messages[0].content, "text", "")
        reads = [(e["action"], e["resource"]["type"], e["resource"]["id"]) for e in w.events("policy.decided")]
        assert reads == [("mcp:read", "McpResource", "crashy/notes://today"), ("mcp:read", "Prompt", "crashy/review")]
        async with client(w, w.token(scopes="mcp:call")) as s:
            with pytest.raises(MCPError) as refused:
                await s.read_resource("notes://today")
            assert refused.value.code == -32003
            assert "tether:scope" in str(refused.value.error.data)


async def test_reads_name_their_result_and_check_their_parent(tmp_path: Path, db_url: str) -> None:
    """resources/read and prompts/get answer with their result's event id, and a parent they name is checked as a
    tool call's is: a read that follows from an earlier read is linked to it; another task's result is refused
    (-32602, a deny on record) and never reaches the upstream."""
    import sys

    script = tmp_path / "crashy.py"
    script.write_text(CRASHY)
    servers = {"crashy": {"command": sys.executable, "args": [str(script)], "timeout": 10}}
    for w in build_world(tmp_path / "w", db_url, servers=servers):
        auth = {"Authorization": f"Bearer {w.token()}"}
        other = {"Authorization": f"Bearer {w.token(task_id=w.new_task())}"}

        async def rpc(h: httpx.AsyncClient, who: dict[str, str], sid: str, method: str, params: dict[str, Any],
                      url: str = w.url) -> Any:  # fmt: skip
            r = await h.post(url, json={"jsonrpc": "2.0", "id": 2, "method": method, "params": params},
                             headers={**who, "Mcp-Session-Id": sid})  # fmt: skip
            return r.json()

        async with httpx.AsyncClient(timeout=30) as h:
            sid, their_sid = await open_session(h, w, auth), await open_session(h, w, other)
            read = {"uri": "notes://today"}
            first = (await rpc(h, auth, sid, "resources/read", read))["result"]["_meta"]["io.tether/event"]
            theirs = (await rpc(h, other, their_sid, "resources/read", read))["result"]["_meta"]["io.tether/event"]
            prompt = {"name": "crashy__review", "arguments": {"topic": "t"}, "_meta": {"io.tether/parent": first}}
            assert "result" in await rpc(h, auth, sid, "prompts/get", prompt)
            decided = len(w.events("policy.decided"))
            for method, params in (("resources/read", read), ("prompts/get", prompt)):
                doc = await rpc(h, auth, sid, method, {**params, "_meta": {"io.tether/parent": theirs}})
                assert doc["error"]["code"] == -32602, method
                assert doc["error"]["data"]["reason"] == "parent_invalid", method
        requested = w.events("tool.requested")
        assert requested[-1]["parent_id"] == first  # the prompt read that followed from the resource read
        denies = w.events("policy.decided")[decided:]
        assert [(e["decision"], e["action"], e["resource"]["type"], e["policy_ids"]) for e in denies] == [
            ("deny", "mcp:read", "McpResource", ["tether:parent-invalid"]),
            ("deny", "mcp:read", "Prompt", ["tether:parent-invalid"]),
        ]
        assert len(w.events("tool.requested")) == len(requested)


async def start_server(script: Path, source: str) -> tuple[subprocess.Popen[bytes], int]:
    """Run `source` (a server taking its port as argv[1]) on a free loopback port; return once /mcp answers."""
    import sys

    from tests.conftest import free_port

    port = free_port()
    script.write_text(source)
    proc = subprocess.Popen([sys.executable, str(script), str(port)])
    deadline = asyncio.get_running_loop().time() + 20
    async with httpx.AsyncClient() as h:
        while True:
            try:
                await h.get(f"http://127.0.0.1:{port}/mcp")
                return proc, port
            except httpx.TransportError:
                if asyncio.get_running_loop().time() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError(f"{script.name} did not start") from None
                await asyncio.sleep(0.1)


ECHO_AUTH = '''
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("echo")


@server.tool()
def whoami(ctx: Context) -> str:
    """Echoes the Authorization header it was sent (a debugging endpoint that reflects credentials)."""
    return "you sent: " + str((ctx.headers or {}).get("authorization"))


@server.tool()
def hello() -> str:
    return "hello"


uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


@asynccontextmanager
async def echo_auth_world(tmp_path: Path, db_url: str, transport: str) -> AsyncIterator[tuple[World, str]]:
    """A gateway in front of ECHO_AUTH over `transport`, reached with the vault's `echo-token` (a bearer holding a
    fresh canary), its tools pinned: (the world, the canary)."""
    import secrets

    canary = "canary-" + secrets.token_urlsafe(24)
    proc, port = await start_server(tmp_path / "echo_auth.py", ECHO_AUTH)
    try:
        servers = {"echo": {"url": f"http://127.0.0.1:{port}/mcp", "credential": "echo-token", "timeout": 10,
                            "transport": transport}}  # fmt: skip
        for w in build_world(tmp_path, db_url, servers=servers, allow_all=True):
            w.services.extras["vault"].add("system", "echo-token", "bearer", {"token": canary})
            await w.pin_all()
            yield w, canary
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("transport", ["sdk", "lean"])
async def test_an_answer_holding_the_injected_credential_is_withheld_and_recorded(
    tmp_path: Path, db_url: str, transport: str
) -> None:
    """A URL upstream that reflects the credential the gateway injected: the agent gets a tool error, not the
    secret; credential.leak_blocked is recorded; an answer without it passes."""
    async with echo_auth_world(tmp_path, db_url, transport) as (w, canary):
        async with client(w) as s:
            fine = await s.call_tool("echo__hello", {})
            assert not fine.is_error
            assert text_of(fine) == "hello"
            r = await s.call_tool("echo__whoami", {})
            assert r.is_error
            assert canary not in text_of(r)
            assert "withheld" in text_of(r)
            assert meta_of(r)["reason"] == "credential_leak_blocked"
        blocked = w.events("credential.leak_blocked")
        assert len(blocked) == 1
        assert blocked[0]["detail"]["upstream"] == "echo"
        assert canary not in json.dumps(blocked)


@pytest.mark.parametrize("transport", ["sdk", "lean"])
async def test_a_credential_gone_from_the_vault_is_a_tool_error_and_the_allowed_call_has_its_outcome(
    tmp_path: Path, db_url: str, transport: str
) -> None:
    """The credential a URL upstream is reached with is removed while sessions are open: the next allowed call
    is a tool error naming the server (no credential name, no protocol error), and its outcome is on record —
    before, the provider's error escaped the call and the allowed decision had no outcome until a restart."""
    async with echo_auth_world(tmp_path, db_url, transport) as (w, _canary):
        async with client(w) as s:
            assert text_of(await s.call_tool("echo__hello", {})) == "hello"
            assert w.services.extras["vault"].remove("echo-token")
            r = await s.call_tool("echo__hello", {})
            assert r.is_error
            assert "MCP server echo" in text_of(r)
            assert "echo-token" not in text_of(r)
            if transport == "lean":  # the SDK's transport reports its session as closed by the failure
                assert "could not obtain its credential for MCP server echo" in text_of(r)
        allowed = [e["id"] for e in w.events("policy.decided") if e["decision"] == "allow"]
        assert len(allowed) == 2
        outcome = {e["parent_id"]: e["outcome"] for e in w.events("tool.completed")}
        assert outcome[allowed[1]]["status"] == "unavailable"


MIRROR = '''
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def mcp(request):
    """A server that reflects the Authorization header it was sent into its listings."""
    if request.method == "DELETE":
        return Response(status_code=200)
    msg = await request.json()
    if "id" not in msg:
        return Response(status_code=202)
    auth = request.headers.get("authorization", "")
    m = msg["method"]
    if m == "initialize":
        result = {"protocolVersion": "2025-11-25", "serverInfo": {"name": "mirror", "version": "1"},
                  "capabilities": {"tools": {}, "prompts": {}, "resources": {}}}
    elif m == "tools/list":
        result = {"tools": [{"name": "hello", "description": "says hello", "inputSchema": {"type": "object"}},
                            {"name": "mirror", "description": "debug: " + auth, "inputSchema": {"type": "object"}}]}
    elif m == "prompts/list":
        result = {"prompts": [{"name": "plain", "description": "a prompt"}, {"name": "echo", "description": auth}]}
    elif m == "resources/list":
        result = {"resources": [{"uri": "mirror://plain", "name": "plain"}, {"uri": "mirror://auth", "name": auth}]}
    else:
        return JSONResponse({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "no"}})
    return JSONResponse({"jsonrpc": "2.0", "id": msg["id"], "result": result}, headers={"Mcp-Session-Id": "s1"})


uvicorn.run(Starlette(routes=[Route("/mcp", mcp, methods=["POST", "DELETE"])]), host="127.0.0.1",
            port=int(sys.argv[1]), log_level="warning")
'''


async def test_listings_holding_the_injected_credential_are_withheld_and_never_pinned(
    tmp_path: Path, db_url: str
) -> None:
    """A server that reflects its credential into tool, prompt and resource listings: the entries holding it
    never reach the agent (each listing records credential.leak_blocked), and `tether mcp pin` leaves such a
    tool out, so the secret never lands in the pin store either."""
    import secrets

    from tether.gateway.mcp.catalog import tool_pin
    from tether.gateway.mcp.pins import fetch_tools, pin_tools

    canary = "canary-" + secrets.token_urlsafe(24)
    proc, port = await start_server(tmp_path / "mirror.py", MIRROR)
    try:
        servers = {"mirror": {"url": f"http://127.0.0.1:{port}/mcp", "credential": "mirror-token", "timeout": 10,
                              "transport": "lean"}}  # fmt: skip
        for w in build_world(tmp_path, db_url, servers=servers, allow_all=True):
            w.services.extras["vault"].add("system", "mirror-token", "bearer", {"token": canary})
            gw = w.gateway
            spec = gw.servers["mirror"]
            pinned = await pin_tools(gw.pin_store, spec, None, actor=w.sponsor, headers=gw.pool.headers)
            assert [r.tool for r in pinned] == ["hello"]
            assert canary not in json.dumps(list(gw.pin_store.all().values()), default=str)
            # Pinned anyway (an operator pinned it while the server behaved): the listing still withholds it.
            leaky = (await fetch_tools(spec, None))["mirror"]
            leaky = {**leaky, "description": f"debug: Bearer {canary}"}
            gw.pin_store.approve(w.sponsor, "mirror", "mirror", tool_pin(leaky), leaky)
            gw.pins_changed()
            async with client(w) as s:
                tools = [t.name for t in (await s.list_tools()).tools]
                assert tools == ["mirror__hello"]
                prompts = [p.name for p in (await s.list_prompts()).prompts]
                assert prompts == ["mirror__plain"]
                resources = await s.list_resources()
                assert [str(r.uri) for r in resources.resources] == ["mirror://plain"]
                seen = json.dumps([tools, prompts, resources.model_dump(mode="json")])
                assert canary not in seen
            blocked = w.events("credential.leak_blocked")
            assert sorted(e["detail"]["where"] for e in blocked) == ["prompts/list", "resources/list", "tools/list"]
            assert canary not in json.dumps(blocked)
    finally:
        proc.terminate()
        proc.wait(10)


SESSIONS = '''
import asyncio
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("where")


@server.tool()
async def where(ctx: Context) -> str:
    """The MCP session this call arrived in (after a pause, so calls overlap)."""
    await asyncio.sleep(0.3)
    return str((ctx.headers or {}).get("mcp-session-id"))


uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


@pytest.mark.parametrize("transport", ["sdk", "lean"])
async def test_a_tasks_tool_calls_spread_over_its_sessions_only_when_configured(tmp_path: Path, transport: str) -> None:
    """`sessions_per_task: 3`: overlapping calls of one task use up to three upstream sessions, everything else
    and a lone call the first; the default keeps one session per task; ending the task closes them all."""
    from tether.gateway.mcp.config import ServerSpec
    from tether.gateway.mcp.upstream import UpstreamPool

    proc, port = await start_server(tmp_path / "sessions.py", SESSIONS)
    url = f"http://127.0.0.1:{port}/mcp"

    async def sessions_seen(pool: UpstreamPool, key: Any, n: int) -> set[str]:
        results = await asyncio.gather(*(pool.request(key, "tools/call", {"name": "where"}) for _ in range(n)))
        return {r["content"][0]["text"] for r in results}

    try:
        for spread in (3, 1):
            spec = ServerSpec(name="where", url=url, transport=transport, sessions_per_task=spread)
            pool = UpstreamPool({"where": spec})
            key = ("where", "per_1", "tsk_1")
            try:
                first = (await sessions_seen(pool, key, 1)).pop()
                assert first not in ("", "None")
                seen = await sessions_seen(pool, key, 6)
                assert len(seen) == spread
                assert first in seen
                assert await sessions_seen(pool, key, 1) == {first}  # nothing in flight: the first again
                await pool.request(key, "tools/list", None)
                assert len(pool.live("where")) == spread
                other = await sessions_seen(pool, ("where", "per_1", "tsk_2"), 1)  # another task: its own
                assert other.isdisjoint(seen)
                await pool.drop(task_id="tsk_1")
                assert [s.key for s in pool.live("where")] == [("where", "per_1", "tsk_2")]
            finally:
                await pool.close()
    finally:
        proc.terminate()
        proc.wait(10)

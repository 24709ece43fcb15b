"""`tether quickstart` end to end: a real server process, the demo organisation, both gateways.

An agent with a key made by `tether agent keygen` exchanges a delegation token for task
tokens, reads team notes through /mcp, is held for approval on a destructive tool, is
approved by a person through the API, repeats the call with the approval and succeeds once;
it reads mail through /proxy/m365 from the Microsoft 365 simulator; the audit chain verifies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import free_port
from tether.sdk import AgentClient


def exchange(demo: dict[str, str], scope: str, resource: str, purpose: str) -> str:
    """A task token for the demo agent, through the agent-side SDK (private_key_jwt + RFC 8693)."""
    client = AgentClient(demo["base"], demo["key"])
    try:
        return str(client.exchange(demo["delegation"], scope, resource, purpose)["access_token"])
    finally:
        client.close()


TETHER = str(Path(sys.executable).parent / "tether")


@contextmanager
def running_demo(data: Path, *, workers: int = 1) -> Iterator[dict[str, str]]:
    """`tether quickstart` in a process group of its own, ready, with an agent key and a delegation token."""
    port = free_port()
    env = {**os.environ, "TETHER_DATA_DIR": str(data)}
    log = (data / "quickstart.log").open("wb")
    sim_port = free_port()
    proc = subprocess.Popen(
        [TETHER, "quickstart", "--data-dir", str(data), "--port", str(port), "--sim-port", str(sim_port),
         "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (data / "quickstart.log").read_text()
            time.sleep(0.3)
        else:
            pytest.fail("quickstart did not become ready")
        admin = (data / "admin-token").read_text().strip()
        h = {"Authorization": f"Bearer {admin}"}
        agent = next(
            a for a in httpx.get(base + "/v1/agents", headers=h).json()["items"] if a["name"] == "alice-assistant"
        )
        key = data / "alice.jwk.json"
        subprocess.run(
            [TETHER, "agent", "keygen", agent["id"], "--data-dir", str(data), "--out", str(key)],
            check=True,
            capture_output=True,
            env=env,
        )
        dlg = httpx.get(base + "/v1/delegations", params={"agent_id": agent["id"]}, headers=h).json()["items"][0]
        delegation_token = httpx.post(base + f"/v1/delegations/{dlg['id']}/token", headers=h).json()["delegation_token"]
        yield {"base": base, "admin": admin, "key": str(key), "delegation": delegation_token, "data": str(data)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
        log.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_demo(tmp_path_factory.mktemp("demo")) as d:
        yield d


async def test_mcp_read_allowed_destructive_tool_held_then_approved_once(demo: dict[str, str]) -> None:
    """Reads go through; delete_note waits for approval; once approved the same call succeeds exactly once."""
    base = demo["base"]
    token = exchange(demo, "mcp:read mcp:call", base + "/mcp", "tidy notes")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(base + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = [t.name for t in (await session.list_tools()).tools]
        assert "notes__search_notes" in names
        found = await session.call_tool("notes__search_notes", {"query": "q3"})
        assert not found.is_error
        assert found.content[0].text == "q3-plan"
        held = await session.call_tool("notes__delete_note", {"name": "offsite"})
        assert held.is_error
        text = held.content[0].text
        assert "mcp.destructive-tool-needs-approval" in text
        approval_id = text.split("approval_id=")[1].split()[0]
        admin = {"Authorization": f"Bearer {demo['admin']}"}
        # The sponsor (Alice) approves; the admin token is Sam's, so approve as Alice with her own token.
        approvals = httpx.get(base + f"/v1/approvals/{approval_id}", headers=admin).json()
        assert approvals["status"] == "pending"
        people = httpx.get(base + "/v1/persons", headers=admin).json()["items"]
        alice = next(p for p in people if p["email"] == "alice@contoso.example")
        alice_token = httpx.post(
            base + "/v1/admin-tokens", headers=admin, json={"person_id": alice["id"], "role": "approver"}
        ).json()["token"]
        r = httpx.post(
            base + f"/v1/approvals/{approval_id}/approve",
            json={"reason": "stale note"},
            headers={"Authorization": f"Bearer {alice_token}"},
        )
        assert r.status_code == 200, r.text
        meta = {"io.tether/approval": approval_id}
        other_args = await session.call_tool("notes__delete_note", {"name": "standup"}, meta=meta)
        assert other_args.is_error  # the approval is bound to the exact request
        done = await session.call_tool("notes__delete_note", {"name": "offsite"}, meta=meta)
        assert not done.is_error, done.content
        assert done.content[0].text == "deleted"
        replay = await session.call_tool("notes__delete_note", {"name": "offsite"}, meta=meta)
        assert replay.is_error


def test_graph_mail_through_the_http_gateway_and_the_chain_verifies(demo: dict[str, str]) -> None:
    """A task token for /proxy/m365 reads Alice's mail from the simulator; the audit chain is intact."""
    base = demo["base"]
    token = exchange(demo, "mail:read", base + "/proxy/m365", "inbox")
    r = httpx.get(
        base + "/proxy/m365/v1.0/users/alice@contoso.example/messages",
        params={"$top": "2"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["value"]) == 2
    assert r.headers["content-security-policy"] == "sandbox"
    mcp_token = exchange(demo, "mcp:read", base + "/mcp", "x")
    wrong = httpx.get(
        base + "/proxy/m365/v1.0/users/alice@contoso.example/messages", headers={"Authorization": f"Bearer {mcp_token}"}
    )
    assert wrong.status_code == 401  # a token for /mcp is useless at /proxy/m365
    v = httpx.get(base + "/v1/audit/verify", headers={"Authorization": f"Bearer {demo['admin']}"})
    assert v.status_code == 200
    assert v.json()["ok"] is True


def test_policy_replay_reports_what_a_stricter_bundle_would_have_blocked(demo: dict[str, str], tmp_path: Path) -> None:
    """`tether policy replay` re-decides the recorded calls under a candidate bundle and lists the changes."""
    import json

    from tether.policy import DEFAULT_PACK

    base = demo["base"]
    token = exchange(demo, "mcp:read", base + "/mcp", "search")
    r = httpx.post(
        base + "/mcp",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
    )
    sid = r.headers["mcp-session-id"]
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "notes__read_note", "arguments": {"name": "standup"}},
    }
    hdrs = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream", "Mcp-Session-Id": sid}
    assert httpx.post(base + "/mcp", headers=hdrs, json=call).status_code == 200
    strict = tmp_path / "strict"
    strict.mkdir()
    for f in DEFAULT_PACK.glob("*.cedar"):
        (strict / f.name).write_text(f.read_text())
    (strict / "99-no-notes.cedar").write_text(
        '@id("notes.closed")\n@reason("Team notes are closed to agents")\n'
        'forbid (principal, action == Action::"mcp:read", resource is Tool);\n'
    )
    done = subprocess.run(
        [TETHER, "policy", "replay", "--bundle", str(strict), "--data-dir", demo["data"], "--json"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TETHER_DATA_DIR": demo["data"]},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["replayed"] >= 1
    changed = [c for c in report["changed"] if c["resource"] == "Tool::notes/read_note"]
    assert changed
    assert changed[0]["was"] == "allow"
    assert changed[0]["now"] == "deny"
    assert changed[0]["policy_ids"] == ["notes.closed"]

"""The console in a real browser (Debian chromium through Playwright), against real gateway calls.

Each test serves the `tether quickstart` world in this process on a loopback port: the demo
organisation (`tether.cli.quickstart.seed`), its gateway config with the demo `notes` MCP server
behind /mcp (tools pinned), the shipped policy pack. The agent `alice-assistant` registers a key,
exchanges Alice's delegation token for a task token (the agent SDK, RFC 8693) and calls tools with
the MCP SDK client over streamable HTTP. `notes__delete_note` is destructive, so the real
`Enforcer` holds it for approval; Alice, the agent's sponsor, decides in the browser, and the
agent's retry (`_meta["io.tether/approval"]`) runs exactly once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import free_port
from tests.http_gateway_world import Served
from tether.api.wiring import Services, build_services
from tether.cli.identity import new_ed25519_jwk
from tether.cli.quickstart import gateway_config, seed
from tether.config import Settings
from tether.identity.model import Role
from tether.sdk import AgentClient
from tether.tokens.jose import unverified_claims

CHROMIUM = "/usr/bin/chromium"
APPROVAL = "io.tether/approval"
PROMPT = "io.tether/prompt"
HELD_BY = "mcp.destructive-tool-needs-approval"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (apt-get install chromium)"
    ),
]


def run(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine to completion on its own loop (Playwright's sync API owns this thread's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# ---------------------------------------------------------------------- the quickstart world, in process


@dataclass
class Demo:
    services: Services
    base: str
    alice: str  # Alice Andersen: the person the agent acts for, and its sponsor
    agent: str  # alice-assistant
    key_file: Path
    delegation: str  # Alice's delegation token for the agent

    def task_token(self, purpose: str) -> tuple[str, str]:
        """(task token for /mcp, task id) through the agent SDK: private_key_jwt + token exchange."""
        client = AgentClient(self.base, self.key_file)
        try:
            grant = client.exchange(self.delegation, "mcp:read mcp:call", self.base + "/mcp", purpose)
        finally:
            client.close()
        token = str(grant["access_token"])
        return token, str(unverified_claims(token)[1]["task_id"])

    def call(self, token: str, tool: str, arguments: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Any:
        """One tools/call through /mcp with the MCP SDK client, in a session of its own."""

        async def go() -> Any:
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
                streamable_http_client(self.base + "/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return await session.call_tool(tool, dict(arguments), meta=dict(meta) if meta else None)

        return run(go())

    def held(self, token: str, tool: str, arguments: Mapping[str, Any], prompt: str | None = None) -> str:
        """Make a call the policy holds for approval; returns the approval id the refusal names."""
        result = self.call(token, tool, arguments, {PROMPT: prompt} if prompt is not None else None)
        assert result.is_error
        text = result.content[0].text
        assert HELD_BY in text, text
        return str(text.split("approval_id=")[1].split()[0])

    def approver_token(self) -> str:
        return self.services.admin_tokens.issue(self.alice, Role.APPROVER, "browser test")


@pytest.fixture
def demo(db_url: str, tmp_path: Path) -> Iterator[Demo]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    # the simulator port is never served here: only /mcp is used
    config = gateway_config(data, free_port())
    settings = Settings(data_dir=data, database_url=db_url, port=port, public_url=base, gateway_config=config)
    svc = build_services(settings, migrate=False)
    try:
        ids = seed(svc)
        from tether.gateway.mcp.pins import pin_tools
        from tether.store.gateway import SqlPinStore

        spec = svc.extras["mcp_gateway"].config.servers["notes"]
        assert run(pin_tools(SqlPinStore(svc.db), spec, None, actor="system", headers=None))
        private, public = new_ed25519_jwk()
        key_file = tmp_path / "alice-assistant.jwk.json"
        key_file.write_text(json.dumps({**private, "agent_id": ids["alice-assistant"]}))
        svc.identity.add_key("system", ids["alice-assistant"], public)
        dlg = svc.identity.list_delegations(agent_id=ids["alice-assistant"]).items[0]
        assert svc.tokens is not None
        delegation = svc.tokens.mint_delegation_token(ids["alice"], dlg.id)
        from tether.api.app import create_app

        with Served(create_app(svc), port=port):
            yield Demo(svc, base, ids["alice"], ids["alice-assistant"], key_file, delegation)
    finally:
        svc.close()


# ---------------------------------------------------------------------- the browser


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: TETHER_SCREENSHOTS (docs/screenshots when refreshing the docs) or tmp."""
    out = Path(os.environ.get("TETHER_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _page(browser, base: str):  # type: ignore[no-untyped-def]
    ctx = browser.new_context(base_url=base, viewport={"width": 1280, "height": 860})
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    return page


def _sign_in(page, token: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/console/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/")


# ---------------------------------------------------------------------- the tests


def test_approver_approves_and_the_retried_call_succeeds(demo: Demo, browser, shots):  # type: ignore[no-untyped-def]
    """A held delete_note appears in the queue with its context; approved in the browser, the agent's
    retry runs once (a second retry is refused) and the task timeline shows the approval and the completion."""
    token, task = demo.task_token("tidy the team notes")
    first = demo.held(token, "notes__delete_note", {"name": "offsite"}, prompt="Delete the old offsite note")
    approver = demo.approver_token()

    page = _page(browser, demo.base)
    _sign_in(page, approver)
    page.goto("/console/approvals")
    page.locator(f"[data-approval='{first}']").wait_for()
    # the queue refreshes itself: a second held call shows up without a reload by the user
    second = demo.held(token, "notes__delete_note", {"name": "standup"})
    page.locator(f"[data-approval='{second}']").wait_for(timeout=15_000)
    assert "you may decide" in page.locator(f"[data-approval='{first}']").inner_text()
    page.screenshot(path=str(shots / "approvals-queue.png"), full_page=True)

    page.click(f"a[href='/console/approvals/{first}']")
    page.locator("#status").filter(has_text="pending").wait_for()
    arguments = json.loads(page.locator("#arguments").inner_text())
    assert arguments["tool"] == "notes/delete_note"
    assert arguments["arguments"] == {"name": "offsite"}
    assert page.locator("#prompt").inner_text() == "Delete the old offsite note"
    context = page.locator("main").inner_text()
    for expected in ("alice-assistant", "Alice Andersen", task, "mcp:call", HELD_BY):
        assert expected in context, expected
    page.screenshot(path=str(shots / "approval-detail.png"), full_page=True)
    page.fill("#reason", "The offsite is over; the note can go")
    page.fill("#token", approver)  # the console asks for the admin token again to confirm
    page.click("#approve")
    page.locator("#status").filter(has_text="approved").wait_for()

    page.goto(f"/console/tasks/{task}")
    page.locator("li[data-type='approval.decided']").wait_for()
    assert page.locator("li[data-type='tool.completed']").count() == 0
    done = demo.call(token, "notes__delete_note", {"name": "offsite"}, {APPROVAL: first})
    assert not done.is_error, done.content
    assert done.content[0].text == "deleted"
    page.locator("li[data-type='tool.completed']").wait_for(timeout=15_000)  # the page refreshed itself
    timeline = page.locator("#timeline")
    for kind in ("task.started", "tool.requested", "approval.requested", "approval.decided", "approval.used"):
        assert timeline.locator(f"li[data-type='{kind}']").count() >= 1, kind
    assert timeline.locator("li[data-type='approval.used']").count() == 1
    assert timeline.locator("li[data-type='tool.completed']").count() == 1
    assert timeline.locator("li[data-type='policy.decided'] .pill.allow").count() == 1
    assert "chain intact" in page.locator("#chain-status").inner_text()
    page.screenshot(path=str(shots / "task-timeline.png"), full_page=True)

    replay = demo.call(token, "notes__delete_note", {"name": "offsite"}, {APPROVAL: first})
    assert replay.is_error  # the grant was for one execution
    assert "already_used" in replay.content[0].text
    assert demo.services.approvals is not None
    assert demo.services.approvals.get(first).status.value == "used"
    page.goto(f"/console/approvals/{first}")
    assert page.locator("#status").inner_text() == "used"

    page.goto("/console/policies")  # the bundle that held the call, with its policies
    assert page.locator("#bundle-hash").inner_text() == demo.services.policy.bundle_hash  # type: ignore[union-attr]
    assert page.locator("#loaded-at").inner_text().endswith(" UTC")
    held_by = page.locator(f"[data-policy='{HELD_BY}']")
    assert "forbid" in held_by.inner_text()
    assert "destructive" in held_by.locator("td").nth(2).inner_text()
    # the bundle's source is a directory of this machine: kept out of the committed picture
    page.screenshot(path=str(shots / "policies.png"), full_page=True, mask=[page.locator("#bundle-source")],
                    mask_color="#e5e7eb")  # fmt: skip
    for name, path in (("dashboard", "/console/"), ("agents", "/console/agents"), ("tasks", "/console/tasks"),
                       ("breakglass", "/console/breakglass")):  # fmt: skip
        page.goto(path)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def test_stored_xss_through_tool_arguments_renders_as_text(demo: Demo, browser):  # type: ignore[no-untyped-def]
    """Markup the assistant put in the task purpose, the tool arguments and the prompt shows as text and never runs."""
    evil = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2</script>'
    token, task = demo.task_token("notes " + evil)
    a = demo.held(token, "notes__delete_note", {"name": evil}, prompt=evil)
    page = _page(browser, demo.base)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _sign_in(page, demo.approver_token())
    for path in ("/console/approvals", f"/console/approvals/{a}", f"/console/tasks/{task}", "/console/tasks"):
        page.goto(path)
        page.wait_for_timeout(300)
        assert page.evaluate("window.__xss") is None, path
        assert page.locator("main img, main script").count() == 0, path
    page.goto(f"/console/approvals/{a}")
    assert json.loads(page.locator("#arguments").inner_text())["arguments"] == {"name": evil}
    assert page.locator("#prompt").inner_text() == evil
    page.goto(f"/console/tasks/{task}")
    assert evil in page.locator("#purpose").inner_text()
    held = json.loads(page.locator("li[data-type='approval.requested'] pre").inner_text())
    assert held["arguments"] == {"name": evil}
    assert dialogs == []


def test_form_post_without_csrf_token_is_refused(demo: Demo, browser):  # type: ignore[no-untyped-def]
    """Stripping the CSRF field from the approve form makes the server refuse the post."""
    token, _ = demo.task_token("tidy the team notes")
    a = demo.held(token, "notes__delete_note", {"name": "standup"})
    approver = demo.approver_token()
    page = _page(browser, demo.base)
    _sign_in(page, approver)
    page.goto(f"/console/approvals/{a}")
    page.evaluate("document.querySelector('#decide-form input[name=csrf]').remove()")
    page.fill("#reason", "looks fine")
    page.fill("#token", approver)
    with page.expect_response(lambda r: r.request.method == "POST") as resp:
        page.click("#approve")
    assert resp.value.status == 403
    assert "CSRF" in page.content()
    assert demo.services.approvals is not None
    assert demo.services.approvals.get(a).status.value == "pending"
    still = demo.call(token, "notes__delete_note", {"name": "standup"}, {APPROVAL: a})
    assert still.is_error  # nothing was approved, so the retry is refused
    assert "pending" in still.content[0].text

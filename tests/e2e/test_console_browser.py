"""The console in a real browser (Debian chromium through Playwright).

The pending approval comes from a gateway call taken through the enforcement steps
(`tests.approvals_world.simulated_gateway_call`: durable tool.requested + policy.decided,
`ApprovalService.request`, then `consume` on the retry) — the policy engine the shared
`Enforcer` needs has not landed in this tree yet.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.approvals_world import make_world, pending, simulated_gateway_call
from tether.approvals import ApprovalInvalid
from tether.identity.model import Role

CHROMIUM = "/usr/bin/chromium"
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


def test_approver_approves_and_the_retried_call_succeeds(live_server, services, browser, shots):
    """Sign in, see the held call appear in the queue, approve it, watch the retry complete in the timeline."""
    w = make_world(services)
    token = services.admin_tokens.issue(w.sponsor, Role.APPROVER)
    allowed, first = run(simulated_gateway_call(w, prompt="Send the Q3 report to our partner"))
    assert not allowed
    assert first is not None

    page = _page(browser, live_server.base)
    _sign_in(page, token)

    page.goto("/console/approvals")
    page.locator(f"[data-approval='{first}']").wait_for()
    # the queue refreshes itself: a second held call shows up without a reload by the user
    _, second = run(simulated_gateway_call(w, summary={"to": ["other@external.example"], "subject": "Q4"}))
    page.locator(f"[data-approval='{second}']").wait_for(timeout=15_000)
    page.screenshot(path=str(shots / "approvals-queue.png"), full_page=True)

    page.click(f"a[href='/console/approvals/{first}']")
    assert page.locator("#arguments").inner_text().count("partner@external.example") == 1
    assert "Send the Q3 report" in page.locator("#prompt").inner_text()
    page.screenshot(path=str(shots / "approval-detail.png"), full_page=True)
    page.fill("#reason", "Expected quarterly report to the partner")
    page.fill("#token", token)
    page.click("#approve")
    page.locator("#status").filter(has_text="approved").wait_for()

    page.goto(f"/console/tasks/{w.task}")
    assert page.locator("li[data-type='tool.completed']").count() == 0
    allowed, used = run(simulated_gateway_call(w, approval_id=first))
    assert allowed
    assert used == first
    page.locator("li[data-type='tool.completed']").wait_for(timeout=15_000)  # the page refreshed itself
    assert page.locator("li[data-type='approval.used']").count() == 1
    assert "chain intact" in page.locator("#chain-status").inner_text()
    page.screenshot(path=str(shots / "task-timeline.png"), full_page=True)
    with pytest.raises(ApprovalInvalid):  # the grant was for one execution
        run(simulated_gateway_call(w, approval_id=first))

    for name, path in (("dashboard", "/console/"), ("agents", "/console/agents"), ("tasks", "/console/tasks"),
                       ("policies", "/console/policies"), ("breakglass", "/console/breakglass")):  # fmt: skip
        page.goto(path)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def test_stored_xss_through_tool_arguments_renders_as_text(live_server, services, browser):
    """Markup an assistant put in arguments and the prompt shows as text and never runs."""
    w = make_world(services)
    evil = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2</script>'
    a = run(pending(w, summary={"subject": evil, "to": ["x@y.example"]}, prompt=evil))
    page = _page(browser, live_server.base)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _sign_in(page, services.admin_tokens.issue(w.sponsor, Role.APPROVER))
    for path in ("/console/approvals", f"/console/approvals/{a.id}", f"/console/tasks/{w.task}"):
        page.goto(path)
        page.wait_for_timeout(300)
        assert page.evaluate("window.__xss") is None
    page.goto(f"/console/approvals/{a.id}")
    assert "<script>window.__xss=2</script>" in page.locator("#arguments").inner_text()
    assert "<img src=x onerror=" in page.locator("#prompt").inner_text()
    assert page.locator("#arguments img, #arguments script, #prompt img").count() == 0
    assert dialogs == []


def test_form_post_without_csrf_token_is_refused(live_server, services, browser):
    """Stripping the CSRF field from the approve form makes the server refuse the post."""
    w = make_world(services)
    token = services.admin_tokens.issue(w.sponsor, Role.APPROVER)
    a = run(pending(w))
    page = _page(browser, live_server.base)
    _sign_in(page, token)
    page.goto(f"/console/approvals/{a.id}")
    page.evaluate("document.querySelector('#decide-form input[name=csrf]').remove()")
    page.fill("#reason", "looks fine")
    page.fill("#token", token)
    with page.expect_response(lambda r: r.request.method == "POST") as resp:
        page.click("#approve")
    assert resp.value.status == 403
    assert "CSRF" in page.content()
    assert services.approvals.get(a.id).status.value == "pending"

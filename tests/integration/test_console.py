"""The console's security: sessions, CSRF, re-authentication, headers, escaping."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.approvals_world import make_world, pending
from tether.api.app import create_app
from tether.identity.model import Role
from tether.store.schema.console import console_sessions
from tether.types import utcnow

BASE = "http://127.0.0.1"


@pytest.fixture
def world(services):
    return make_world(services)


@pytest.fixture
def client(services):
    with TestClient(create_app(services), base_url=BASE) as c:
        yield c


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def sign_in(client: TestClient, token: str) -> None:
    page = client.get("/console/login")
    r = client.post("/console/login", data={"csrf": _csrf(page.text), "token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_pages_need_a_session_and_carry_security_headers(client):
    """Without a session pages redirect to sign-in; every response has CSP, nosniff, no framing."""
    r = client.get("/console/approvals", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login"
    assert client.get("/console/approvals.json").status_code == 401
    r = client.get("/console/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    assert "<script>" not in r.text  # no inline script anywhere


def test_session_cookie_is_httponly_strict_host_only_and_stored_as_hash(client, services, world):
    """The cookie is HttpOnly, SameSite=Strict, without Domain; the table keeps only a hash."""
    sign_in(client, services.admin_tokens.issue(world.sponsor, Role.APPROVER))
    cookie = next(c for c in client.cookies.jar if c.name == "tether_session")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite").lower() == "strict"
    assert not cookie.domain_specified
    with services.db.read() as conn:
        (row,) = conn.execute(console_sessions.select()).all()
    assert cookie.value not in (row.secret_hash, row.id)
    assert len(row.secret_hash) == 64


def test_sign_in_without_csrf_or_with_an_auditor_token_is_refused(client, services, world):
    """Login CSRF is checked; only admin and approver tokens open a session."""
    r = client.post("/console/login", data={"token": "x"}, follow_redirects=False)
    assert r.status_code == 403
    auditor = services.admin_tokens.issue(world.sponsor, Role.AUDITOR)
    page = client.get("/console/login")
    r = client.post("/console/login", data={"csrf": _csrf(page.text), "token": auditor}, follow_redirects=False)
    assert r.status_code == 403
    page = client.get("/console/login")
    r = client.post("/console/login", data={"csrf": _csrf(page.text), "token": "tth_wrong"}, follow_redirects=False)
    assert r.status_code == 401


async def test_form_post_without_csrf_token_is_refused(client, services, world):
    """An approve post lacking the session's CSRF token changes nothing."""
    a = await pending(world)
    token = services.admin_tokens.issue(world.sponsor, Role.APPROVER)
    sign_in(client, token)
    r = client.post(f"/console/approvals/{a.id}/approve", data={"reason": "ok", "token": token})
    assert r.status_code == 403
    r = client.post(f"/console/approvals/{a.id}/approve", data={"reason": "ok", "token": token, "csrf": "0" * 64})
    assert r.status_code == 403
    assert services.approvals.get(a.id).status.value == "pending"


async def test_cross_origin_post_is_refused_even_with_the_csrf_token(client, services, world):
    """A post whose Origin is another site is refused."""
    a = await pending(world)
    token = services.admin_tokens.issue(world.sponsor, Role.APPROVER)
    sign_in(client, token)
    csrf = _csrf(client.get(f"/console/approvals/{a.id}").text)
    r = client.post(f"/console/approvals/{a.id}/approve", data={"reason": "ok", "token": token, "csrf": csrf},
                    headers={"Origin": "https://evil.example"})  # fmt: skip
    assert r.status_code == 403
    assert services.approvals.get(a.id).status.value == "pending"


async def test_decision_needs_the_token_again_and_of_the_same_person(client, services, world):
    """A session alone cannot approve: the token must be re-entered, and be the session person's."""
    a = await pending(world)
    token = services.admin_tokens.issue(world.sponsor, Role.APPROVER)
    other = services.admin_tokens.issue(world.outsider, Role.APPROVER)
    sign_in(client, token)
    csrf = _csrf(client.get(f"/console/approvals/{a.id}").text)
    for bad in ("", other):
        r = client.post(f"/console/approvals/{a.id}/approve", data={"reason": "ok", "token": bad, "csrf": csrf})
        assert r.status_code == 403
    assert services.approvals.get(a.id).status.value == "pending"
    r = client.post(f"/console/approvals/{a.id}/approve", data={"reason": "ok", "token": token, "csrf": csrf})
    assert r.status_code == 200
    assert services.approvals.get(a.id).status.value == "approved"


async def test_idle_session_expires(client, services, world):
    """A session unused for 15 minutes no longer opens pages."""
    sign_in(client, services.admin_tokens.issue(world.sponsor, Role.APPROVER))
    assert client.get("/console/approvals", follow_redirects=False).status_code == 200
    with services.db.write() as conn:
        conn.execute(update(console_sessions).values(last_seen_at=utcnow() - timedelta(minutes=16)))
    assert client.get("/console/approvals", follow_redirects=False).status_code == 303


async def test_revoked_token_ends_its_session(client, services, world):
    """Revoking the person's admin tokens ends their console sessions too."""
    sign_in(client, services.admin_tokens.issue(world.sponsor, Role.APPROVER))
    services.admin_tokens.revoke_for_person(world.sponsor)
    assert client.get("/console/", follow_redirects=False).status_code == 303


async def test_assistant_controlled_arguments_render_as_text(client, services, world):
    """Markup in tool arguments and the prompt is escaped on the queue, detail and timeline pages."""
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    a = await pending(world, summary={"subject": evil}, prompt=evil)
    sign_in(client, services.admin_tokens.issue(world.sponsor, Role.APPROVER))
    for path in ("/console/approvals", f"/console/approvals/{a.id}", f"/console/tasks/{world.task}"):
        html = client.get(path).text
        assert "<script>alert(1)" not in html
        assert "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_every_page_renders_for_a_signed_in_approver(client, services, world):
    """Dashboard, approvals, agents, tasks, a task, policies and break-glass all render."""
    sign_in(client, services.admin_tokens.issue(world.sponsor, Role.APPROVER))
    for path in ("/console/", "/console/approvals", "/console/agents", "/console/tasks",
                 f"/console/tasks/{world.task}", "/console/policies", "/console/breakglass"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:500])
    assert "Mail helper" in client.get("/console/agents").text


def test_suspend_from_the_console_needs_an_admin_token(client, services, world):
    """An approver's re-entered token cannot suspend an agent; an admin's can."""
    approver = services.admin_tokens.issue(world.breakglass, Role.APPROVER)
    admin = services.admin_tokens.issue(world.breakglass, Role.ADMIN)
    sign_in(client, admin)
    csrf = _csrf(client.get("/console/agents").text)
    r = client.post(f"/console/agents/{world.agent}/suspend", data={"csrf": csrf, "token": approver, "reason": "x"})
    assert r.status_code == 403
    r = client.post(f"/console/agents/{world.agent}/suspend", data={"csrf": csrf, "token": admin, "reason": "x"})
    assert r.status_code == 200
    assert services.identity.get_agent(world.agent).status.value == "suspended"


def _log_status(html: str) -> str:
    m = re.search(r'<span id="log-status">(.*?)</span>\s*</p>', html, re.S)
    assert m, "no whole-log status on the task page"
    return re.sub(r"\s+", " ", m.group(1))


async def test_the_task_page_shows_the_whole_logs_verification(client, services, world):
    """The whole chain is verified in the background: 'verified' on an intact log, the first bad seq after an edit."""
    from tether.store.schema.audit import audit_events

    await pending(world)
    sign_in(client, services.admin_tokens.issue(world.sponsor, Role.APPROVER))
    console = next(r.app for r in client.app.routes if getattr(r, "path", "") == "/console")
    status = console.state.chain_status
    status.every = 0.0  # a new run on every page load (the default is at most one a minute)
    page = f"/console/tasks/{world.task}"
    client.get(page)
    status.wait(30)
    intact = _log_status(client.get(page).text)
    assert "verified" in intact
    assert "NOT intact" not in intact
    status.wait(30)
    with services.db.write() as conn:  # someone edits the first record in the database
        body = conn.execute(audit_events.select().where(audit_events.c.seq == 1)).one().body
        conn.execute(update(audit_events).where(audit_events.c.seq == 1).values(body=body.replace('"', '"x', 1)))
    client.get(page)
    status.wait(30)
    broken = _log_status(client.get(page).text)
    assert "NOT intact" in broken
    assert "at seq 1" in broken


async def test_the_queue_names_agent_and_person_and_policies_name_the_default_approver(client, services, world):
    """People read names, not ids: the queue shows the agent's and the person's names beside their ids;
    a policy asking for approval without @approver shows that the sponsor decides."""
    a = await pending(world)
    sign_in(client, services.admin_tokens.issue(world.sponsor, Role.APPROVER))
    row = re.search(rf'<tr data-approval="{a.id}">(.*?)</tr>', client.get("/console/approvals").text, re.S)
    assert row
    assert "Mail helper" in row.group(1)
    assert "Pat Person" in row.group(1)
    assert a.agent_id in row.group(1)
    # the default pack's destructive-action rules ask for approval and name no @approver
    assert "sponsor (default)" in client.get("/console/policies").text


def test_the_dashboard_counts_a_refused_approval_retry_as_a_denial(services):
    """A replayed or mismatched approval never reaches the policy engine; the dashboard still counts the refusal."""
    from tether.audit.model import Event
    from tether.console.queries import dashboard

    assert services.audit is not None
    services.audit.record_sync([
        Event(type="policy.decided", agent_id="agt_a", decision="allow"),
        Event(type="policy.decided", agent_id="agt_a", decision="deny"),
        Event(type="approval.refused", agent_id="agt_b", approval_id="apr_x", detail={"why": "already_used"}),
    ])  # fmt: skip
    d = dashboard(services.db)
    assert (d.calls, d.allowed, d.denials) == (3, 1, 2)
    assert sum(b.value for b in d.hourly_denied) == 2
    assert {b.label: b.value for b in d.top_agents} == {"agt_a": 2, "agt_b": 1}

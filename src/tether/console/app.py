"""The web console at /console/: server-rendered (Jinja2, autoescaped), no front-end build.

Security, in the order a request meets it:
- every response carries a strict CSP (no inline script), frame-ancestors 'none', nosniff,
  no-referrer and no-store;
- a signed-in session comes from one host-only, HttpOnly, SameSite=Strict cookie, checked
  against the server-side table (idle 15 min, absolute 8 h, dies with its admin token);
- every POST carries the session's CSRF token and a same-origin `Origin` when the browser
  sends one;
- approve, deny, break-glass, suspend and resume ask for the admin token again and act as
  the Person it names, which must be the session's Person.
Assistant-controlled strings (arguments, prompts, resource ids) are only ever rendered
through autoescaping; no template marks them safe.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from tether import __version__
from tether.api.auth import Principal
from tether.api.wiring import Services
from tether.approvals import ApprovalService, ApprovalStatus
from tether.console import queries
from tether.console.sessions import COOKIE, LOGIN_COOKIE, Session, Sessions, csrf_for, csrf_ok
from tether.errors import Forbidden, TetherError, Unauthenticated, Unavailable
from tether.identity.model import Role
from tether.types import new_id, utcnow

HERE = Path(__file__).parent
PREFIX = "/console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
SIGN_IN_ROLES = {Role.ADMIN.value, Role.APPROVER.value}


class NeedsSignIn(Exception):
    """No live session: pages redirect to the sign-in form, JSON and POSTs answer 401."""


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(("html",), default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M:%S UTC") if v is not None else ""
    return env


def create_console(services: Services) -> FastAPI:
    """The console as an ASGI app, mounted by the server at /console."""
    env = _environment()
    sessions = Sessions(
        services.db,
        idle_seconds=services.settings.console_idle_seconds,
        max_seconds=services.settings.console_max_seconds,
    )
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, title="Tether console")
    app.state.sessions = sessions

    def _verify_log() -> Any:
        from tether.api.routes.audit import run_verify

        return run_verify(services)

    chain_status = ChainStatus(_verify_log)
    app.state.chain_status = chain_status

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def approvals() -> ApprovalService:
        if services.approvals is None:
            raise Unavailable("approvals are not available")
        return services.approvals

    def render(request: Request, name: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
        session: Session | None = getattr(request.state, "session", None)
        person = None
        if session is not None:
            try:
                person = services.identity.get_person(session.person_id)
            except TetherError:
                person = None
        html = env.get_template(name).render(
            base=PREFIX, session=session, person=person, version=__version__,
            csrf=session.csrf if session else ctx.pop("csrf", ""), path=request.url.path, **{"now": utcnow(), **ctx},
        )  # fmt: skip
        return HTMLResponse(html, status_code=http_status)

    def current(request: Request) -> Session:
        s = sessions.lookup(request.cookies.get(COOKIE))
        if s is None:
            raise NeedsSignIn()
        request.state.session = s
        return s

    def same_origin(request: Request) -> None:
        # Defence in depth next to the CSRF token: a post naming another origin is refused.
        # ("null" comes from privacy settings and sandboxes; the CSRF token still decides then.)
        origin = request.headers.get("origin")
        if origin and origin != "null":
            o, u = urlsplit(origin), request.url
            if (o.scheme, o.netloc) != (u.scheme, u.netloc):
                raise Forbidden("cross-origin form posts are refused")

    async def posted(request: Request) -> tuple[Session, FormData]:
        """A signed-in, same-origin POST with the session's CSRF token."""
        s = current(request)
        same_origin(request)
        form = await request.form()
        if not csrf_ok(s.secret, str(form.get("csrf") or "")):
            raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
        return s, form

    def reauth(s: Session, form: FormData, *roles: Role) -> Principal:
        """The admin token again, for the same Person: a stolen session alone cannot decide."""
        token = str(form.get("token") or "")
        try:
            p = services.admin_tokens.authenticate(token)
        except Unauthenticated as exc:
            raise Forbidden("re-enter your admin token to confirm this action") from exc
        if p.person_id != s.person_id:
            raise Forbidden("the token entered belongs to another person than this session")
        p.require(*roles)
        return p

    @app.exception_handler(NeedsSignIn)
    async def _signin(request: Request, exc: NeedsSignIn) -> Response:
        if request.method == "GET" and not request.url.path.endswith(".json"):
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        return JSONResponse({"error": "sign in first"}, status_code=401)

    @app.exception_handler(TetherError)
    async def _tether(request: Request, exc: TetherError) -> Response:
        return render(request, "error.html", http_status=exc.status, error=exc)

    # ------------------------------------------------------------------ sign-in

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        pre = new_id("lgn")
        resp = render(request, "login.html", csrf=csrf_for(pre, "login"))
        _set_cookie(request, resp, LOGIN_COOKIE, pre, max_age=900)
        return resp

    @app.post("/login")
    async def login(request: Request) -> Response:
        same_origin(request)
        form = await request.form()
        if not csrf_ok(request.cookies.get(LOGIN_COOKIE), str(form.get("csrf") or ""), "login"):
            raise Forbidden("the sign-in form expired; reload the page and try again")
        try:
            p = services.admin_tokens.authenticate(str(form.get("token") or "").strip())
        except Unauthenticated:
            pre = new_id("lgn")
            resp = render(request, "login.html", http_status=401, csrf=csrf_for(pre, "login"), failed=True)
            _set_cookie(request, resp, LOGIN_COOKIE, pre, max_age=900)
            return resp
        if p.role.value not in SIGN_IN_ROLES:
            raise Forbidden("the console takes an admin or approver token")
        s = sessions.create(p)
        done = RedirectResponse(f"{PREFIX}/", status_code=303)
        _set_cookie(request, done, COOKIE, s.secret, max_age=services.settings.console_max_seconds)
        done.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return done

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        s, _ = await posted(request)
        sessions.end(s.id)
        resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
        resp.delete_cookie(COOKIE, path=PREFIX)
        return resp

    # ------------------------------------------------------------------ dashboard

    @app.get("/", response_class=HTMLResponse)
    async def dashboard(request: Request) -> Response:
        current(request)
        d = queries.dashboard(services.db)
        a = approvals()
        d.pending = len(a.list_approvals(status="pending", limit=200).items)
        bgs = a.list_breakglass(limit=200)
        d.open_reviews = sum(1 for b in bgs if b.review_status.value == "open")
        d.active_breakglass = sum(1 for b in bgs if b.active_at(a.clock()))
        names = _names(services, *(b.label for b in d.top_agents))
        d.top_agents = [queries.Bar(names.get(b.label, b.label), b.value, b.pct) for b in d.top_agents]
        return render(request, "dashboard.html", d=d)

    # ------------------------------------------------------------------ approvals

    @app.get("/approvals", response_class=HTMLResponse)
    async def approvals_queue(request: Request) -> Response:
        s = current(request)
        a = approvals()
        pending = a.list_approvals(status="pending", limit=200).items
        now = a.clock()
        live = [x for x in pending if x.status_at(now) is ApprovalStatus.PENDING]
        recent = [x for x in a.list_approvals(limit=30).items if x.status is not ApprovalStatus.PENDING]
        mine = {x.id for x in live if a.may_decide(s.person_id, x)}
        names = _names(services, *{x.agent_id for x in live}, *{x.person_id for x in live},
                       *{x.decided_by for x in recent})  # fmt: skip
        return render(request, "approvals.html", pending=live, recent=recent, mine=mine, names=names,
                      state=_state([x.id for x in live]), poll=f"{PREFIX}/approvals.json")  # fmt: skip

    @app.get("/approvals.json")
    async def approvals_state(request: Request) -> Response:
        current(request)
        a = approvals()
        now = a.clock()
        ids = [x.id for x in a.list_approvals(status="pending", limit=200).items if x.status_at(now).value == "pending"]
        return JSONResponse({"state": _state(ids), "pending": len(ids)})

    @app.get("/approvals/{approval_id}", response_class=HTMLResponse)
    async def approval_page(request: Request, approval_id: str) -> Response:
        s = current(request)
        a = approvals()
        x = a.get(approval_id)
        why_not = None
        if x.status_at(a.clock()) is ApprovalStatus.PENDING:
            try:
                why_not = a.refusal(services.identity.get_person(s.person_id), x)
            except TetherError as exc:
                why_not = exc.detail
        return render(request, "approval.html", a=x, status=x.status_at(a.clock()).value, why_not=why_not,
                      deliveries=a.deliveries(x.id), names=_names(services, x.agent_id, x.person_id, x.sponsor_id,
                                                                  x.decided_by))  # fmt: skip

    @app.post("/approvals/{approval_id}/{verdict}")
    async def decide(request: Request, approval_id: str, verdict: str) -> Response:
        s, form = await posted(request)
        if verdict not in ("approve", "deny"):
            raise Forbidden("unknown decision")
        who = reauth(s, form, Role.APPROVER)
        await approvals().decide(who.person_id, approval_id, approve=verdict == "approve",
                                 reason=str(form.get("reason") or ""))  # fmt: skip
        return RedirectResponse(f"{PREFIX}/approvals/{approval_id}", status_code=303)

    # ------------------------------------------------------------------ agents

    @app.get("/agents", response_class=HTMLResponse)
    async def agents(request: Request) -> Response:
        current(request)
        items = services.identity.list_agents(limit=200).items
        names = _names(services, *{ag.sponsor_id for ag in items})
        return render(request, "agents.html", agents=items, names=names, today=utcnow().date())

    @app.post("/agents/{agent_id}/{change}")
    async def agent_change(request: Request, agent_id: str, change: str) -> Response:
        s, form = await posted(request)
        who = reauth(s, form)  # admin only
        if change == "suspend":
            services.identity.suspend_agent(who.person_id, agent_id, str(form.get("reason") or "suspended in console"))
            services.admin_tokens.forget()
        elif change == "resume":
            services.identity.resume_agent(who.person_id, agent_id)
        else:
            raise Forbidden("unknown change")
        return RedirectResponse(f"{PREFIX}/agents", status_code=303)

    # ------------------------------------------------------------------ tasks

    @app.get("/tasks", response_class=HTMLResponse)
    async def tasks(request: Request) -> Response:
        current(request)
        agent = request.query_params.get("agent")
        rows = queries.list_tasks(services.db, agent_id=agent)
        names = _names(services, *{r["agent_id"] for r in rows}, *{r["person_id"] for r in rows})
        return render(request, "tasks.html", tasks=rows, names=names)

    @app.get("/tasks/{task_id}", response_class=HTMLResponse)
    async def task_page(request: Request, task_id: str) -> Response:
        current(request)
        task = queries.get_task(services.db, task_id)
        events, check = queries.timeline(services.db, task_id)
        full = chain_status.get()
        arguments = {}
        for ev in events:
            if ev.get("approval_id") and ev["approval_id"] not in arguments:
                with contextlib.suppress(TetherError):
                    arguments[ev["approval_id"]] = approvals().get(ev["approval_id"]).summary
        if task is None and not events:
            raise _not_found(f"no task {task_id}")
        poll = f"{PREFIX}/tasks/{task_id}/state.json"
        return render(request, "task.html", task=task, task_id=task_id, events=events, check=check, full=full,
                      arguments=arguments, state=str(len(events)), poll=poll)  # fmt: skip

    @app.get("/tasks/{task_id}/state.json")
    async def task_state(request: Request, task_id: str) -> Response:
        current(request)
        return JSONResponse({"state": str(queries.event_counts(services.db, task_id))})

    # ------------------------------------------------------------------ policies

    @app.get("/policies", response_class=HTMLResponse)
    async def policies(request: Request) -> Response:
        current(request)
        return render(request, "policies.html", info=_policy_info(services))

    # ------------------------------------------------------------------ break-glass

    @app.get("/breakglass", response_class=HTMLResponse)
    async def breakglass(request: Request) -> Response:
        s = current(request)
        a = approvals()
        items = a.list_breakglass(limit=100)
        agents = services.identity.list_agents(limit=200).items
        names = _names(services, *{b.invoked_by for b in items}, *{b.reviewed_by for b in items if b.reviewed_by})
        return render(request, "breakglass.html", items=items, agents=agents, names=names, now=a.clock(),
                      me=s.person_id, max_minutes=a.breakglass_max // 60)  # fmt: skip

    @app.post("/breakglass")
    async def breakglass_start(request: Request) -> Response:
        s, form = await posted(request)
        who = reauth(s, form, Role.BREAKGLASS)
        minutes = _int(form.get("minutes"), 15)
        await approvals().start_breakglass(
            who.person_id, agent_id=str(form.get("agent_id") or ""), task_id=str(form.get("task_id") or "") or None,
            justification=str(form.get("justification") or ""), duration=minutes * 60,
        )  # fmt: skip
        return RedirectResponse(f"{PREFIX}/breakglass", status_code=303)

    @app.post("/breakglass/{breakglass_id}/review")
    async def breakglass_review(request: Request, breakglass_id: str) -> Response:
        s, form = await posted(request)
        await approvals().review_breakglass(s.person_id, breakglass_id, note=str(form.get("note") or ""))
        return RedirectResponse(f"{PREFIX}/breakglass", status_code=303)

    return app


def _set_cookie(request: Request, resp: Response, name: str, value: str, *, max_age: int) -> None:
    # host-only (no Domain), path-scoped to the console; Secure whenever the console is on https
    resp.set_cookie(name, value, max_age=max_age, path=PREFIX, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https")  # fmt: skip


def _state(ids: list[str]) -> str:
    import hashlib

    return hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:16]


def _int(value: Any, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def _names(services: Services, *ids: str | None) -> dict[str, str]:
    """Display names for person and agent ids (unknown ids map to themselves)."""
    out: dict[str, str] = {}
    for i in ids:
        if not i or i in out:
            continue
        try:
            if i.startswith("per_"):
                out[i] = services.identity.get_person(i).name
            elif i.startswith("agt_"):
                out[i] = services.identity.get_agent(i).name
        except TetherError:
            out[i] = i
    return out


def _not_found(detail: str) -> TetherError:
    from tether.errors import NotFound

    return NotFound(detail)


class ChainStatus:
    """The whole log's verification for the console: run in a thread at most every `every` seconds.

    Verifying the whole chain takes seconds on a large log (150,000-300,000 events/s), too long
    for a page load; pages show the latest finished result, with its time, and start a new run
    when that is older than `every`. None until the first run finishes.
    """

    def __init__(self, run: Callable[[], Any], *, every: float = 60.0) -> None:
        self._run = run
        self.every = every
        self._lock = threading.Lock()
        self._result: dict[str, Any] | None = None
        self._at = float("-inf")
        self._thread: threading.Thread | None = None

    def get(self) -> dict[str, Any] | None:
        with self._lock:
            if time.monotonic() - self._at > self.every and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._verify, name="tether-console-verify", daemon=True)
                self._thread.start()
            return self._result

    def wait(self, timeout: float) -> None:
        """For tests: wait for a run under way to finish."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _verify(self) -> None:
        started = time.monotonic()
        ok, events, detail, bad = False, 0, "", None
        try:
            r = self._run()
            ok, events, detail, bad = bool(r.ok), r.events, r.detail or "", r.first_bad_seq
        except TetherError as exc:
            detail = exc.detail
        except Exception as exc:  # noqa: BLE001 — a page shows a verification failure, it does not crash
            detail = type(exc).__name__
        result = {"ok": ok, "events": events, "detail": detail, "first_bad_seq": bad, "at": utcnow()}
        with self._lock:
            self._result, self._at = result, started


def _policy_info(services: Services) -> dict[str, Any]:
    """The policy engine's bundle: hash, source, files, when it was loaded, the last reload error, its policies."""
    engine = services.policy
    if engine is None:
        return {"engine": False, "loaded": False}
    bundle = engine.bundle
    loaded_at = engine.loaded_at
    # who may lift a forbid that asks for approval: the policy's @approver, else the agent's sponsor
    policies = [
        {
            "id": p.id,
            "effect": p.effect,
            "reason": p.reason,
            "where": f"{p.file}:{p.line}",
            "approver": p.approver or ("sponsor (default)" if p.obligation == "approval" else None),
        }
        for p in (bundle.policies.values() if bundle is not None else ())
    ]
    return {
        "engine": True, "loaded": bundle is not None, "hash": engine.bundle_hash,
        "source": bundle.source if bundle is not None else None, "files": list(bundle.files) if bundle else [],
        "loaded_at": datetime.fromtimestamp(loaded_at, UTC) if loaded_at is not None else None,
        "last_error": engine.last_error, "policies": sorted(policies, key=lambda p: str(p["id"])),
    }  # fmt: skip


__all__ = ["CSP", "PREFIX", "SECURITY_HEADERS", "create_console"]

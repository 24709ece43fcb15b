"""A world for the HTTP gateway tests: the Microsoft 365 simulator and a hostile upstream on
loopback ports, Tether serving /proxy with vault credentials that are unique random canaries,
and task tokens signed by Tether's own key ring.

`RuleEnforcer` stands in for `tether.gateway._enforce.Enforcer` while the policy context has
not landed (the real one imports `tether.policy`): same `check`/`completed`/`record`
interface, decisions from a small rule function, events appended to the real audit chain
in a write transaction, approvals bound to the request digest and consumed once.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port, listening_socket
from tether.api.wiring import Services, build_services
from tether.audit.chain import append
from tether.audit.model import Event
from tether.config import Settings
from tether.errors import Forbidden
from tether.gateway._enforce import TaskUsage
from tether.sim.m365 import M365Sim, create_app
from tether.types import new_id

TENANT = "contoso.example"


class Served:
    """Any ASGI app under uvicorn on a loopback port, in a thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        from tether.api.http_protocol import HttpProtocol  # what `tether serve` runs

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", http=HttpProtocol))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, args=([listening_socket(self.port)],), daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


# ---------------------------------------------------------------------- a hostile upstream


@dataclass
class Hostile:
    """Endpoints that try to leak or misuse what the gateway injects."""

    other: str = ""  # base URL of a second host that redirects point to
    seen: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def echo_headers(request: Request) -> Response:
            self.seen.append(dict(request.headers))
            return JSONResponse({"headers": dict(request.headers)})

        async def echo_b64(request: Request) -> Response:
            auth = request.headers.get("authorization", "") + request.headers.get("x-api-key", "")
            return Response(b"prefix:" + base64.b64encode(b"xx" + auth.encode()) + b":suffix", media_type="text/plain")

        async def echo_urlenc(request: Request) -> Response:
            return Response(("token=" + quote(request.headers.get("x-api-key", ""), safe="")).encode(),
                            media_type="text/plain")  # fmt: skip

        async def echo_gzip(request: Request) -> Response:
            data = gzip.compress(("x" * 70000 + request.headers.get("authorization", "")).encode())
            return Response(data, media_type="text/plain", headers={"content-encoding": "gzip"})

        async def echo_split(request: Request) -> Response:
            auth = request.headers.get("authorization", "").encode()

            async def gen() -> Any:
                yield b"a" * 1000 + auth[: len(auth) // 2]
                await asyncio.sleep(0.01)
                yield auth[len(auth) // 2 :] + b"b" * 1000

            return StreamingResponse(gen(), media_type="application/octet-stream")

        async def header_leak(request: Request) -> Response:
            return Response(b"{}", media_type="application/json",
                            headers={"x-debug-auth": request.headers.get("authorization", "")})  # fmt: skip

        async def redirect_away(request: Request) -> Response:
            return RedirectResponse(self.other + "/steal", status_code=302)

        async def redirect_home(request: Request) -> Response:
            return RedirectResponse("/api/items", status_code=302)

        async def steal(request: Request) -> Response:
            self.seen.append(dict(request.headers))
            return JSONResponse({"stolen": True})

        async def items(request: Request) -> Response:
            n = int(request.query_params.get("n", "3"))
            await asyncio.sleep(float(request.query_params.get("delay", "0")))
            pad = "x" * int(request.query_params.get("pad", "0"))
            return JSONResponse({"value": [{"id": i, **({"pad": pad} if pad else {})} for i in range(n)]})

        async def big(request: Request) -> Response:
            async def gen() -> Any:
                for _ in range(80):
                    yield b"z" * 65536

            return StreamingResponse(gen(), media_type="application/octet-stream")

        def token(request: Request) -> str:
            return request.headers.get("authorization", "")[7:]

        async def record(request: Request) -> Response:
            self.seen.append(dict(request.headers))
            return JSONResponse({})

        async def redirect_leak(request: Request) -> Response:
            return RedirectResponse(f"/api/items?leak={token(request)}", status_code=302)

        async def gzip_twice(request: Request) -> Response:
            data = gzip.compress(gzip.compress(b"token=" + token(request).encode()))
            return Response(data, media_type="text/plain", headers={"content-encoding": "gzip, gzip"})

        async def header_name(request: Request) -> Response:
            return Response(b"ok", media_type="text/plain", headers={"x-" + token(request): "1"})

        async def escaped(request: Request) -> Response:
            text = "".join(f"\\u{ord(c):04x}" for c in token(request))
            return Response(('{"v":"' + text + '"}').encode(), media_type="application/json")

        async def many(request: Request) -> Response:  # a Graph function (delta) answering a list
            return JSONResponse({"value": [{"id": str(i)} for i in range(60)]})

        async def batch(request: Request) -> Response:
            doc = await request.json()
            self.seen.append({"batch": json.dumps(doc)})
            where = "https://contoso-my.sharepoint.example/download.aspx?tempauth=PREAUTH123"
            return JSONResponse({"responses": [{"id": r["id"], "status": 302, "headers": {"Location": where}}
                                               for r in doc["requests"]]})  # fmt: skip

        return Starlette(routes=[
            Route("/api/echo", echo_headers), Route("/api/echo-b64", echo_b64), Route("/api/echo-url", echo_urlenc),
            Route("/api/echo-gzip", echo_gzip), Route("/api/echo-split", echo_split),
            Route("/api/header-leak", header_leak), Route("/api/redirect-away", redirect_away),
            Route("/api/redirect-home", redirect_home), Route("/steal", steal), Route("/api/items", items),
            Route("/api/big", big), Route("/api/redirect-leak", redirect_leak), Route("/api/gzip-twice", gzip_twice),
            Route("/api/header-name", header_name), Route("/api/escaped", escaped), Route("/api/record", record),
            Route("/v1.0/users/delta", many), Route("/v1.0/me/mailFolders/inbox/messages/delta", many),
            Route("/v1.0/$batch", batch, methods=["POST"]),
        ])  # fmt: skip


HOSTILE_MAP = {
    "name": "hostile",
    "routes": [
        {"name": "read", "method": "GET", "paths": ["/api/{what}"], "action": "http:read",
         "resource": {"type": "HttpResource", "system": "http:hostile", "id": "{what}", "owner": None}},
    ],
}  # fmt: skip


# ---------------------------------------------------------------------- a stand-in enforcer


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    APPROVAL_REQUIRED = "approval_required"


@dataclass(frozen=True)
class Decision:
    id: str
    effect: Effect
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    allowed: bool
    approval_id: str | None
    request_event_id: str
    decision_event_id: str


def default_rules(call: Any) -> tuple[Effect, str]:
    """Scope check, then: sharing/sending confidential+ outside the tenant needs approval."""
    if call.action not in call.token.scopes:
        return Effect.DENY, "tether:scope"
    external = int(call.facts.get("external_recipients", 0) or 0)
    if call.action in ("mail:send", "files:share", "mail:forward") and external:
        if call.resource.sensitivity == "highly_confidential":
            return Effect.DENY, "default:hc-never-leaves"
        if call.resource.sensitivity == "confidential" or call.action == "mail:send":
            return Effect.APPROVAL_REQUIRED, "default:external-confidential"
    return Effect.ALLOW, "default:permit-scoped"


class RuleEnforcer:
    def __init__(self, services: Services, rules: Callable[[Any], tuple[Effect, str]] = default_rules) -> None:
        self.db = services.db
        self.rules = rules
        self.usage = TaskUsage()
        self.approvals: dict[str, dict[str, Any]] = {}
        self.calls: list[Any] = []
        self.pending = 0

    def _append(self, events: list[Event]) -> None:
        self.pending += 1
        try:
            with self.db.write() as conn:
                append(conn, events)
        finally:
            self.pending -= 1

    def drain(self, timeout: float = 5.0) -> None:
        """Wait for outcome writes still running after their response went out (before closing the database)."""
        deadline = time.time() + timeout
        while self.pending and time.time() < deadline:
            time.sleep(0.01)

    async def check(self, call: Any) -> Verdict:
        self.calls.append(call)
        lifted = False
        if call.approval_id:
            a = self.approvals.get(call.approval_id)
            if a is None or a["status"] != "approved" or a["digest"] != call.request_digest:
                raise Forbidden("approval not valid for this request")
            a["status"] = "used"
            lifted = True
        effect, pid = self.rules(call)
        if lifted and effect is Effect.APPROVAL_REQUIRED:
            effect = Effect.ALLOW
        decision = Decision(new_id("dec"), effect, (pid,), (f"rule {pid}",))
        req_id, dec_id = new_id("evt"), new_id("evt")
        t = call.token
        common = {"actor": t.agent_id, "task_id": t.task_id, "agent_id": t.agent_id, "person_id": t.person_id,
                  "action": call.action, "request_digest": call.request_digest, "trace_id": call.trace_id,
                  "resource": {"type": call.resource.type, "id": call.resource.id,
                               "sensitivity": call.resource.sensitivity}}  # fmt: skip
        await asyncio.to_thread(self._append, [
            Event(id=req_id, type="tool.requested", detail={"summary": dict(call.summary)}, **common),
            Event(id=dec_id, type="policy.decided", parent_id=req_id, decision=effect.value, policy_ids=(pid,),
                  approval_id=call.approval_id, **common),
        ])  # fmt: skip
        approval_id = call.approval_id
        if effect is Effect.APPROVAL_REQUIRED:
            approval_id = new_id("apr")
            self.approvals[approval_id] = {"status": "pending", "digest": call.request_digest}
        allowed = effect is Effect.ALLOW
        if allowed:
            self.usage.add(t.task_id, calls=1)
        return Verdict(decision, allowed, approval_id, req_id, dec_id)

    def approve(self, approval_id: str) -> None:
        self.approvals[approval_id]["status"] = "approved"

    async def completed(self, call: Any, verdict: Verdict, *, outcome: Mapping[str, Any]) -> None:
        t = call.token
        self.usage.add(t.task_id, items=int(outcome.get("items", 0) or 0), bytes=int(outcome.get("bytes", 0) or 0))
        await asyncio.to_thread(self._append, [Event(
            type="tool.completed", actor=t.agent_id, task_id=t.task_id, agent_id=t.agent_id, person_id=t.person_id,
            action=call.action, parent_id=verdict.decision_event_id, outcome=dict(outcome),
        )])  # fmt: skip

    async def record(self, event: Event) -> None:
        await asyncio.to_thread(self._append, [event])


# ---------------------------------------------------------------------- the world


@dataclass
class World:
    services: Services
    tether: Served
    sim: M365Sim
    sim_server: Served
    hostile: Hostile
    enforcer: RuleEnforcer
    canaries: dict[str, str]
    person_id: str
    agent_id: str = "agt_alice_assistant"

    @property
    def base(self) -> str:
        return self.tether.base

    def token(self, upstream: str = "m365", scopes: str = "mail:read mail:send calendar:read files:read files:share "
              "users:read sites:read http:read", task_id: str | None = None, **extra: Any) -> str:  # fmt: skip
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.services.settings.issuer, "sub": self.person_id, "act": {"sub": self.agent_id},
            "client_id": self.agent_id, "aud": f"{self.base}/proxy/{upstream}", "scope": scopes,
            "task_id": task_id or self.task_id, "jti": new_id("tok"), "iat": now, "nbf": now, "exp": now + 300,
        }  # fmt: skip
        claims.update(extra)
        return self.services.verifier.keyring.sign(claims, "at+jwt")  # type: ignore[union-attr]

    task_id: str = ""


def _config(path: Path, sim_base: str, hostile_base: str, m365_credential: str = "graph-obo",
            **hostile_extra: Any) -> Path:  # fmt: skip
    maps = path.parent / "hostile-map.yaml"
    maps.write_text(yaml.safe_dump(HOSTILE_MAP))
    doc = {"http": {"upstreams": {
        "m365": {"base_url": sim_base, "route_map": "graph", "credential": m365_credential,
                 "label_credential": "graph-app", "tenant_domains": [TENANT]},
        "hostile": {"base_url": hostile_base, "route_map": str(maps), "credential": "hostile-bearer",
                    "budget": {"bytes": 1_000_000, "items": 50}, **hostile_extra},
        "keyed": {"base_url": hostile_base, "route_map": str(maps), "credential": "hostile-key"},
        # the hostile server behind the shipped Graph map (answers Graph paths it makes up)
        "fakegraph": {"base_url": hostile_base, "route_map": "graph", "credential": "hostile-bearer",
                      "tenant_domains": [TENANT], "budget": {"items": 50}},
    }}}  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass
class WorldParts:
    tmp: Path
    db_url: str


def build_world(tmp: Path, db_url: str, *, real: bool = False, m365_credential: str = "graph-obo") -> Iterator[World]:
    """`real=True` keeps Tether's own Enforcer (policy engine, audit writer, approvals) and seeds an
    active agent with a delegation, so decisions come from the default Cedar pack. `m365_credential`:
    what the gateway injects for Graph (`graph-app`: the app-only client credential)."""
    canaries = {k: f"canary-{k}-{secrets.token_urlsafe(24)}" for k in ("obo", "app", "bearer", "apikey")}
    sim = M365Sim(clients={"tether-gateway": canaries["obo"], "tether-labels": canaries["app"]})
    hostile = Hostile()
    other = Served(Starlette(routes=[Route("/steal", _steal_factory(hostile))]))
    with Served(create_app(sim)) as sim_server, Served(hostile.app()) as hostile_server, other:
        hostile.other = other.base
        port = free_port()
        settings = Settings(
            data_dir=tmp / "data", database_url=db_url, port=port, public_url=f"http://127.0.0.1:{port}",
            gateway_config=_config(tmp / "gateway.yaml", sim_server.base, hostile_server.base, m365_credential),
        )  # fmt: skip
        services = build_services(settings, migrate=False)
        enforcer = RuleEnforcer(services)
        if not real:
            services.enforcer = enforcer  # type: ignore[assignment]
        vault = services.extras["vault"]
        token_url = f"{sim_server.base}/{TENANT}/oauth2/v2.0/token"
        vault.add("system", "graph-obo", "obo", {"client_secret": canaries["obo"]},
                  {"token_url": token_url, "client_id": "tether-gateway"})  # fmt: skip
        vault.add("system", "graph-app", "client_credentials", {"client_secret": canaries["app"]},
                  {"token_url": token_url, "client_id": "tether-labels", "app_only": True})  # fmt: skip
        vault.add("system", "hostile-bearer", "bearer", {"token": canaries["bearer"]})
        vault.add("system", "hostile-key", "api_key", {"key": canaries["apikey"]}, {"header": "X-API-Key"})
        alice = services.identity.create_person(
            "system", email=f"alice@{TENANT}", name="Alice", subject="alice",
            entitlements=["mail:*", "calendar:*", "files:*", "users:read", "sites:read"],
        )  # fmt: skip
        agent_id = "agt_alice_assistant"
        if real:
            from datetime import UTC, datetime, timedelta

            agent = services.identity.create_agent(
                "system", name="alice-assistant", sponsor_id=alice.id, owner_team="platform",
                purpose="Alice's assistant", mode="executing", ceiling=["mail:*", "calendar:*", "files:*"],
            )  # fmt: skip
            services.identity.delegate(
                alice.id, person_id=alice.id, agent_id=agent.id,
                actions=["mail:read", "mail:send", "calendar:read", "files:read", "files:share"],
                expires_at=datetime.now(UTC) + timedelta(days=1),
            )  # fmt: skip
            agent_id = agent.id
        from tether.api.app import create_app as tether_app

        with Served(tether_app(services), port=port) as tether:
            world = World(services, tether, sim, sim_server, hostile, enforcer, canaries, alice.id, agent_id)
            world.task_id = new_id("tsk")
            vault.keep_subject_token(world.task_id, alice.id, sim.user_token(f"alice@{TENANT}"),
                                     _in(3600))  # fmt: skip
            try:
                yield world
            finally:
                time.sleep(0.05)  # let tool.completed writes that follow a response begin
                enforcer.drain()
        services.close()


def _steal_factory(h: Hostile) -> Any:
    async def steal(request: Request) -> Response:
        h.seen.append(dict(request.headers))
        return JSONResponse({"stolen": True})

    return steal


def _in(seconds: int) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(seconds=seconds)

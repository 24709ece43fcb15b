"""MCP gateway overhead: `tools/call` of a trivial echo tool through Tether's /mcp versus directly.

Three processes share the machine: the upstream (the `mcp` SDK's MCPServer, streamable HTTP,
JSON responses), Tether (`tether serve`'s app under uvicorn + uvloop, SQLite, the echo tool
pinned and catalogued as read-only, the default policy pack; the echo server keeps no state per
session, so it is configured with `sessions_per_task: 4`, BENCH_SESSIONS=1 for one session a task) and this load generator (aiohttp, raw JSON-RPC, the same client
for both paths). Direct and gateway blocks are interleaved so machine load hits both alike.

Every gateway call is fully processed: task token verified, tool mapped, decided, and
`tool.requested` + `policy.decided` made durable (SQLite, synchronous=FULL) before forwarding;
`tool.completed` after. While the policy engine and the group-commit audit writer have not
landed, this script supplies an allow-all decision and a group-commit writer to the real chain
(used only when `services.policy` / `services.audit` are missing).

    python bench/mcp_gateway.py [--quick] [--workers N] [--contextforge VENV]

Tether runs twice: as one process (latency and calls/s), and as `tether serve --workers N`
(default 2, this machine's cores; calls/s), each on a database of its own.

The interleaved blocks also time the "least durable gateway" (`least_gateway_added_p50_ms`, see
`run_least`): served as Tether is, every lookup a dict, a call's three events chained and committed
with fsync before an aiohttp forward — what a call costs once everything Tether decides and checks
costs nothing, so Tether's own work is its difference to that.

Last line: JSON with added_p50_ms, added_p99_ms, calls_per_s_32 (and the rest).

`--contextforge VENV` (or TETHER_BENCH_CONTEXTFORGE=VENV) adds a fourth process: IBM's
ContextForge (PyPI `mcp-contextforge-gateway`, installed in its own virtualenv VENV, since it
pins mcp 1.x) in front of the same echo upstream, measured with the same client in the same
interleaved blocks. See `contextforge_env` for its configuration and docs/mcp-gateway.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _ports import free_port  # noqa: E402 — bench/ is the script's own directory
from _proc import tree_cpu  # noqa: E402

# ---------------------------------------------------------------- child: the upstream echo server


def run_echo(port: int) -> None:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("echo")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    server.run("streamable-http", host="127.0.0.1", port=port, json_response=True)


# ---------------------------------------------------------------- child: Tether


def run_tether(workdir: Path, port: int, upstream: str, workers: int = 1) -> None:
    import hashlib
    from datetime import timedelta

    import uvicorn
    import yaml
    from sqlalchemy import insert

    import tether.policy as policy_pkg
    from tether.api.app import create_app
    from tether.api.wiring import build_services
    from tether.audit.model import Receipt
    from tether.config import Settings
    from tether.gateway._enforce import Enforcer
    from tether.gateway.mcp.pins import pin_tools
    from tether.log import configure
    from tether.store.schema.identity import tasks
    from tether.types import new_id, utcnow

    configure("warning")
    cfg = workdir / "gateway.yaml"
    harmless = {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False}
    # The echo tool keeps no state per session, so one task's calls may spread over several upstream sessions
    # (the SDK's server spends more per call when 32 calls share one session: docs/mcp-gateway.md).
    echo = {"url": upstream, "max_concurrency": 256, "tools": {"echo": {"annotations": harmless}},
            "transport": os.environ.get("BENCH_TRANSPORT", "lean"),
            "sessions_per_task": int(os.environ.get("BENCH_SESSIONS", "4"))}  # fmt: skip
    cfg.write_text(yaml.safe_dump({"mcp": {"servers": {"echo": echo}}}))
    settings = Settings(data_dir=workdir / "data", port=port, public_url=f"http://127.0.0.1:{port}", gateway_config=cfg)
    services = build_services(settings, migrate=True)

    if getattr(services, "policy", None) is None:  # the policy context has not landed: allow-all stand-in
        from dataclasses import dataclass, field
        from enum import StrEnum

        if not hasattr(policy_pkg, "DecisionRequest"):

            class Effect(StrEnum):
                ALLOW = "allow"
                DENY = "deny"
                APPROVAL_REQUIRED = "approval_required"

            @dataclass(frozen=True, slots=True)
            class DecisionRequest:
                agent_id: str
                person_id: str
                actors: tuple[str, ...]
                task_id: str
                scopes: frozenset[str]
                action: str
                resource: Any
                facts: Any
                usage: Any = field(default_factory=dict)
                constraints: Any = None

            @dataclass(frozen=True, slots=True)
            class Decision:
                id: str
                effect: Effect
                policy_ids: tuple[str, ...]
                reasons: tuple[str, ...]
                forbid_ids: tuple[str, ...] = ()
                approver: str | None = None
                bundle: str = "bench"
                lifted: tuple[str, ...] = ()

            policy_pkg.Effect, policy_pkg.DecisionRequest, policy_pkg.Decision = Effect, DecisionRequest, Decision  # type: ignore[attr-defined]

        class AllowAll:
            bundle_hash = "bench-allow-all"

            def decide(
                self, req: Any, *, lifted_forbids: frozenset[str] = frozenset(), breakglass: bool = False
            ) -> Any:
                d = policy_pkg.Decision  # type: ignore[attr-defined]
                e = policy_pkg.Effect.ALLOW  # type: ignore[attr-defined]
                if req.action not in req.scopes:
                    e = policy_pkg.Effect.DENY  # type: ignore[attr-defined]
                return d(id=new_id("dec"), effect=e, policy_ids=("bench:allow",), reasons=("allow all",),
                         forbid_ids=(), approver=None, bundle="bench")  # fmt: skip

        services.policy = AllowAll()  # type: ignore[attr-defined]

    if os.environ.get("BENCH_AUDIT") == "memory":  # diagnosis only: what the gateway costs without the fsyncs

        class Memory:
            async def record_many(self, events: Any, **_: Any) -> list[Receipt]:
                return [Receipt(0, e.id or "", "") for e in events]

            async def record(self, event: Any, **_: Any) -> Receipt:
                return Receipt(0, event.id or "", "")

            def keyed_digest(self, data: bytes) -> str:
                return hashlib.sha256(data).hexdigest()

        services.audit = Memory()  # type: ignore[assignment]
    services.enforcer = Enforcer(policy=services.policy, audit=services.audit, approvals=services.approvals,  # type: ignore[attr-defined]
                                 metrics=services.metrics)  # fmt: skip
    ident = services.identity
    sponsor = ident.create_person("system", email="s@example.com", name="S", entitlements=["mcp:call"], subject="s")
    person = ident.create_person("system", email="p@example.com", name="P", entitlements=["mcp:call"], subject="p")
    agent = ident.create_agent("system", name="Bench", sponsor_id=sponsor.id, owner_team="bench", purpose="bench",
                               ceiling=["mcp:call"])  # fmt: skip
    task_id = new_id("tsk")
    now = utcnow()
    with services.db.write() as conn:
        conn.execute(insert(tasks).values(
            id=task_id, agent_id=agent.id, person_id=person.id, purpose="bench", scopes=["mcp:call"],
            audience=f"{settings.base_url}/mcp", actors=[agent.id], status="active", started_at=now,
            expires_at=now + timedelta(hours=1),
        ))  # fmt: skip
    gw = services.extras["mcp_gateway"]
    asyncio.run(pin_tools(gw.pin_store, gw.servers["echo"], None, actor=sponsor.id))
    t = int(time.time())
    token = services.verifier.keyring.sign({  # type: ignore[union-attr]
        "iss": settings.issuer, "sub": person.id, "act": {"sub": agent.id}, "client_id": agent.id,
        "aud": f"{settings.base_url}/mcp", "scope": "mcp:call", "task_id": task_id, "jti": new_id("tok"),
        "iat": t, "nbf": t, "exp": t + 3000,
    }, "at+jwt")  # fmt: skip
    (workdir / "token").write_text(token)
    if workers > 1:  # this process becomes `tether serve --workers N`, as an operator runs it
        services.close()
        os.environ |= {"TETHER_PUBLIC_URL": settings.base_url, "TETHER_GATEWAY_CONFIG": str(cfg)}
        exe = str(Path(sys.executable).parent / "tether")
        os.execv(exe, [exe, "serve", "--data-dir", str(settings.data_dir), "--port", str(port),  # noqa: S606
                       "--workers", str(workers)])  # fmt: skip
    app = create_app(services)
    from tether.api.http_protocol import HttpProtocol  # as `tether serve` runs it

    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        cProfile.runctx("uvicorn.run(app, host='127.0.0.1', port=port, log_level='warning', access_log=False, "
                        "loop='uvloop', http=HttpProtocol)", globals(), locals(), os.environ["BENCH_PROFILE"])  # fmt: skip
        return
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop", http=HttpProtocol
    )


# ---------------------------------------------------------------- child: the least durable gateway


def run_least(port: int, upstream: str, token: str, journal: str) -> None:
    """The least an MCP gateway keeping Tether's contract can do, with every lookup a dict: the bearer token
    compared, the JSON-RPC body parsed, a `tools/call`'s namespaced tool name looked up and rewritten, its
    events chained and committed with fsync before the forward (`_least.DurableChain`), every message relayed
    to the upstream with aiohttp (its session header passed both ways) and the answer returned as it came.
    No verification, catalog, policy, pins, sealing or scan: what is left of a call once those cost nothing.
    Served as Tether is (uvicorn, Tether's HTTP protocol)."""
    import orjson
    import uvicorn

    from _least import lifespan
    from tether.api.http_protocol import HttpProtocol

    state: dict[str, Any] = {}
    bearer = f"Bearer {token}".encode()
    tools = {"echo__echo": "echo"}
    passed = (b"content-type", b"accept", b"mcp-session-id", b"mcp-protocol-version")

    async def reply(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if await lifespan(scope, receive, send, state, journal):
            return
        headers = dict(scope["headers"])
        if headers.get(b"authorization") != bearer:
            await reply(send, 401, [], b"")
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        msg = orjson.loads(body)
        decided = None
        if msg.get("method") == "tools/call":
            name = msg["params"]["name"]
            msg["params"]["name"] = tools[name]
            body = orjson.dumps(msg)
            decided = state["chain"].decide("task", "mcp:call", {"type": "Tool", "id": name}, "allow")
        out = {k.decode(): v.decode() for k, v in headers.items() if k in passed}
        async with state["c"].post(upstream, data=body, headers=out) as r:
            answer, status = await r.read(), r.status
            back = [(k.lower().encode(), v.encode()) for k, v in r.headers.items()
                    if k.lower() in ("content-type", "mcp-session-id")]  # fmt: skip
        await reply(send, status, back, answer)
        if decided is not None:
            state["chain"].completed("task", decided, {"status": status, "bytes": len(answer)})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop",
                http=HttpProtocol)  # fmt: skip


# ---------------------------------------------------------------- optional: ContextForge, same upstream

CF_ADMIN = "admin@example.com"
OWN_GROUPS: set[int] = set()  # children started as process-group leaders


def contextforge_env(venv: Path, workdir: Path, port: int) -> dict[str, str]:
    """ContextForge's settings for this bench: its tuning guide's "MCP-only deployment" profile.

    Authentication stays on (bearer JWT, RBAC, auth caches at their longest TTLs); stateful
    streamable HTTP sessions, so one upstream MCP session is reused per client session instead
    of a new upstream client per call; one gunicorn worker (with one worker the in-process
    cache is the shared cache, so Redis is not needed); SQLite in a scratch directory; the
    features this workload does not use (UI, admin UI, A2A, catalog, plugins, observability,
    metrics, audit trail, DB logging) off. Two settings are benchmark necessities, not tuning:
    the default rate limit (100 MCP requests a minute) is off, and a 127.0.0.1 upstream is allowed.
    """

    def strong() -> str:  # it refuses weak or placeholder secrets and passwords
        return f"Pw-{secrets.token_urlsafe(18)}9!"

    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")}
    return keep | {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOST": "127.0.0.1", "PORT": str(port), "DATABASE_URL": f"sqlite:///{workdir / 'cf.db'}",
        "JWT_SECRET_KEY": secrets.token_urlsafe(48), "AUTH_ENCRYPTION_SECRET": secrets.token_urlsafe(48),
        "PLATFORM_ADMIN_EMAIL": CF_ADMIN, "PLATFORM_ADMIN_PASSWORD": strong(), "BASIC_AUTH_PASSWORD": strong(),
        "DEFAULT_USER_PASSWORD": strong(),
        "AUTH_REQUIRED": "true", "AUTH_CACHE_ENABLED": "true", "AUTH_CACHE_BATCH_QUERIES": "true",
        "AUTH_CACHE_USER_TTL": "300", "AUTH_CACHE_TEAM_TTL": "300", "AUTH_CACHE_ROLE_TTL": "300",
        "AUTH_CACHE_REVOCATION_TTL": "120", "REGISTRY_CACHE_ENABLED": "true", "TOOL_LOOKUP_CACHE_ENABLED": "true",
        "CACHE_TYPE": "memory", "USE_STATEFUL_SESSIONS": "true", "JSON_RESPONSE_ENABLED": "true",
        "MCPGATEWAY_UI_ENABLED": "false", "MCPGATEWAY_ADMIN_API_ENABLED": "false", "MCPGATEWAY_A2A_ENABLED": "false",
        "MCPGATEWAY_CATALOG_ENABLED": "false", "LLMCHAT_ENABLED": "false", "PLUGINS_ENABLED": "false",
        "OBSERVABILITY_ENABLED": "false", "ENABLE_METRICS": "false", "AUDIT_TRAIL_ENABLED": "false",
        "SECURITY_LOGGING_ENABLED": "false", "STRUCTURED_LOGGING_DATABASE_ENABLED": "false",
        "CORRELATION_ID_ENABLED": "false", "DB_METRICS_RECORDING_ENABLED": "false",
        "MCPGATEWAY_PERFORMANCE_NET_CONNECTIONS_ENABLED": "false", "COMPRESSION_ENABLED": "false",
        "LOG_LEVEL": "ERROR", "HTTPX_MAX_CONNECTIONS": "200", "HTTPX_MAX_KEEPALIVE_CONNECTIONS": "100",
        "HTTPX_KEEPALIVE_EXPIRY": "30.0",
        "RATE_LIMITING_ENABLED": "false", "SSRF_ALLOW_LOCALHOST": "true",
    }  # fmt: skip


def tail(text: str, n: int = 300) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-3:])[-n:] or "(no output)"


def start_contextforge(
    venv: Path, workdir: Path, upstream: str, procs: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    """Start ContextForge on a loopback port, register the upstream and a virtual server; raise on failure."""
    py, gunicorn = venv / "bin" / "python", venv / "bin" / "gunicorn"
    for exe in (py, gunicorn):
        if not exe.exists():
            raise RuntimeError(f"{exe} not found (install mcp-contextforge-gateway into that virtualenv)")
    workdir.mkdir()
    port = free_port()
    env = contextforge_env(venv, workdir, port)
    # to try other settings: TETHER_BENCH_CONTEXTFORGE_SETTINGS="CACHE_TYPE=redis REDIS_URL=redis://127.0.0.1:6379/9"
    env |= dict(kv.split("=", 1) for kv in os.environ.get("TETHER_BENCH_CONTEXTFORGE_SETTINGS", "").split())

    def run(*args: str, timeout: float) -> str:  # cwd: the scratch dir, so no stray .env file is read
        r = subprocess.run([str(py), *args], env=env, cwd=workdir, capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} exited with {r.returncode}: {tail(r.stderr or r.stdout)}")
        return r.stdout

    version = run("-c", "from importlib.metadata import version; print(version('mcp-contextforge-gateway'))",
                  timeout=60).strip()  # fmt: skip
    run("-m", "mcpgateway.bootstrap_db", timeout=300)  # the schema, before the worker starts
    log = workdir / "contextforge.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(gunicorn), "mcpgateway.main:app", "--worker-class", "uvicorn.workers.UvicornWorker",
                                 "--workers", "1", "--bind", f"127.0.0.1:{port}", "--timeout", "600",
                                 "--graceful-timeout", "5", "--access-logfile", "/dev/null", "--error-logfile", "-"],
                                env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip  # own group: master and worker stop together
    procs.append(proc)
    OWN_GROUPS.add(proc.pid)
    api = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}: {tail(log.read_text(errors='replace'))}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=5) as r:  # noqa: S310 - http loopback URL built here
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError(f"no /health within 180 s: {tail(log.read_text(errors='replace'))}")
        time.sleep(0.5)
    # a bearer token as its README says: its JWT tool, signed with JWT_SECRET_KEY, for the platform admin
    token = run("-m", "mcpgateway.utils.create_jwt_token", "--username", CF_ADMIN, "--exp", "240", timeout=120)
    token = token.strip().splitlines()[-1]

    def api_call(method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        req = urllib.request.Request(f"{api}{path}", data=data, headers=headers, method=method)  # noqa: S310 - as below
        try:
            with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - http loopback URL built here
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code} {e.read()[:200]!r}") from None

    api_call("POST", "/gateways", {"name": "echo", "url": upstream, "transport": "STREAMABLEHTTP"})
    listed = api_call("GET", "/tools")
    items = listed if isinstance(listed, list) else listed.get("items", [])
    tool = next((t for t in items if (t.get("originalName") or t.get("original_name")) == "echo"), None)
    if tool is None:
        raise RuntimeError(f"the echo tool was not discovered: {str(listed)[:200]}")
    server = api_call("POST", "/servers", {"server": {"name": "echo_vs", "associated_tools": [tool["id"]]}})
    return {"url": f"{api}/servers/{server['id']}/mcp", "token": token, "tool": tool["name"], "version": version}


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop every child; one that leads its own process group (gunicorn) is stopped with its group."""

    def send(p: subprocess.Popen[bytes], sig: int) -> None:
        try:
            if p.pid in OWN_GROUPS:
                os.killpg(p.pid, sig)
            elif p.poll() is None:
                p.send_signal(sig)
        except ProcessLookupError:
            pass

    for p in procs:
        send(p, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            send(p, signal.SIGKILL)
            p.wait()
        if p.pid in OWN_GROUPS:  # a worker that outlived its master
            send(p, signal.SIGKILL)
            OWN_GROUPS.discard(p.pid)


# ---------------------------------------------------------------- the load generator


class Client:
    def __init__(self, http: Any, url: str, token: str | None) -> None:
        self.http, self.url = http, url
        self.headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.n = 0

    async def rpc(self, method: str, params: Any = None) -> Any:
        self.n += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.n, "method": method}
        if params is not None:
            body["params"] = params
        async with self.http.post(self.url, data=json.dumps(body), headers=self.headers) as r:
            if method == "initialize":
                sid = r.headers.get("mcp-session-id")
                if sid:
                    self.headers["Mcp-Session-Id"] = sid
                    self.headers["MCP-Protocol-Version"] = "2025-11-25"
            data = await r.read()
            if r.status >= 400:
                raise RuntimeError(f"{method}: HTTP {r.status} {data[:200]!r}")
            if data and r.content_type == "text/event-stream":  # a server that streams even a single reply
                data = [ln[5:] for ln in data.splitlines() if ln.startswith(b"data:")][-1]
            return json.loads(data) if data else None

    async def open(self) -> None:
        await self.rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "bench", "version": "1"}})  # fmt: skip
        self.n += 1
        async with self.http.post(self.url, data=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                                  headers=self.headers) as r:  # fmt: skip
            await r.read()

    async def call(self, tool: str) -> None:
        res = await self.rpc("tools/call", {"name": tool, "arguments": {"text": "hello"}})
        result = res.get("result") or {}
        if "error" in res or result.get("isError"):
            raise RuntimeError(f"call failed: {res}")


async def timed(client: Client, tool: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.call(tool)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def throughput(make: Any, tool: str, concurrency: int, seconds: float, warm: bool = False) -> float:
    clients = [await make() for _ in range(concurrency)]
    if warm:  # one untimed call per client first (ContextForge opens an upstream session per client session)
        await asyncio.gather(*(c.call(tool) for c in clients))
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(c: Client) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await c.call(tool)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    return done / (time.perf_counter() - t0)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def measure(
    direct_url: str,
    gw_url: str,
    token: str,
    quick: bool,
    cf: dict[str, Any] | None,
    multi: tuple[str, str] | None,
    pids: tuple[int | None, int | None] = (None, None),
    least_url: str | None = None,
) -> dict[str, Any]:
    import aiohttp

    conn = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=conn) as http:

        def maker(url: str, bearer: str | None) -> Any:
            async def make() -> Client:
                c = Client(http, url, bearer)
                await c.open()
                return c

            return make

        make_direct, make_gw = maker(direct_url, None), maker(gw_url, token)
        d, g = await make_direct(), await make_gw()
        await timed(d, "echo", 50)
        await timed(g, "echo__echo", 50)
        least_client = await maker(least_url, token)() if least_url else None
        if least_client is not None:
            await timed(least_client, "echo__echo", 50)
        cf_error = ""
        if cf:  # ContextForge: same client, its virtual server's URL and its name for the tool
            make_cf = maker(cf["url"], cf["token"])
            try:
                c = await make_cf()
                await timed(c, cf["tool"], 50)
            except Exception as e:  # noqa: BLE001 - the third-party leg is dropped, the run goes on
                cf_error = str(e)
        blocks, per = (4, 100) if quick else (10, 200)
        direct: list[float] = []
        gateway: list[float] = []
        contextforge: list[float] = []
        least: list[float] = []
        for _ in range(blocks):
            direct += await timed(d, "echo", per)
            gateway += await timed(g, "echo__echo", per)
            if least_client is not None:
                least += await timed(least_client, "echo__echo", per // 2)
            if cf and not cf_error:
                try:
                    contextforge += await timed(c, cf["tool"], per)
                except Exception as e:  # noqa: BLE001 - as above
                    cf_error = str(e)
        secs = 3.0 if quick else 8.0
        res = {
            "direct_p50_ms": statistics.median(direct), "direct_p99_ms": pct(direct, 0.99),
            "gateway_p50_ms": statistics.median(gateway), "gateway_p99_ms": pct(gateway, 0.99),
            "calls_per_s_1": await throughput(make_gw, "echo__echo", 1, secs),
            "direct_calls_per_s_1": await throughput(make_direct, "echo", 1, secs),
        }  # fmt: skip
        if least:
            res |= {"least_p50_ms": statistics.median(least), "least_p99_ms": pct(least, 0.99)}
        if cf_error:
            res["contextforge_error"] = cf_error[:300]
        elif cf:
            res |= {
                "contextforge_p50_ms": statistics.median(contextforge),
                "contextforge_p99_ms": pct(contextforge, 0.99),
            }
            res["contextforge_calls_per_s_1"] = await cf_throughput(make_cf, cf["tool"], 1, secs)
        before = tree_cpu(pids[0])
        res["calls_per_s_32"] = await throughput(make_gw, "echo__echo", 32, secs)
        res["cpu_ms_per_call_32"] = per_call(before, tree_cpu(pids[0]), res["calls_per_s_32"], secs)
        res["direct_calls_per_s_32"] = await throughput(make_direct, "echo", 32, secs)
        if multi:
            make_multi = maker(*multi)
            await timed(await make_multi(), "echo__echo", 50)
            before = tree_cpu(pids[1])
            res["workers_calls_per_s_32"] = await throughput(make_multi, "echo__echo", 32, secs)
            res["cpu_ms_per_call_32_workers"] = per_call(before, tree_cpu(pids[1]), res["workers_calls_per_s_32"], secs)
        if cf and not cf_error:
            res["contextforge_calls_per_s_32"] = await cf_throughput(make_cf, cf["tool"], 32, secs)
        res["samples"] = len(gateway)
        return res


def per_call(before: float | None, after: float | None, rate: float, seconds: float) -> float | None:
    """CPU ms a call, from the serving process tree's CPU seconds before and after a throughput run."""
    if before is None or after is None or rate <= 0:
        return None
    return round((after - before) * 1000 / (rate * seconds), 3)


async def cf_throughput(make: Any, tool: str, concurrency: int, seconds: float) -> float | str:
    """ContextForge's calls/s; an error there is reported in its figure, not fatal to the run."""
    try:
        return await throughput(make, tool, concurrency, seconds, warm=True)
    except Exception as e:  # noqa: BLE001 - any failure of the third-party leg becomes its figure
        return f"failed: {str(e)[:160]}"


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"child exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Until /readyz answers 200 (with workers, the port opens before they serve)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"child exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Tether on {port} did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (< 60 s)")
    ap.add_argument(
        "--sdk", action="store_true", help="reach the upstream with the SDK's ClientSession (default: lean)"
    )
    ap.add_argument("--memory-audit", action="store_true",
                    help="diagnosis: audit events kept in memory (no durable write), to split the added cost")  # fmt: skip
    ap.add_argument("--contextforge", metavar="VENV", type=Path, default=os.environ.get("TETHER_BENCH_CONTEXTFORGE"),
                    help="also measure ContextForge (mcp-contextforge-gateway installed in virtualenv VENV; default: "
                         "$TETHER_BENCH_CONTEXTFORGE) in front of the same upstream. Its start-up (schema, boot, "
                         "registration) takes 10-20 s and its calls are slower, so the run takes longer (--quick: "
                         "about 50 s here, more on a loaded machine; the 60 s bound holds only without it). If it fails to "
                         "start, the run goes on without it.")  # fmt: skip
    ap.add_argument("--workers", type=int, default=2, help="processes of the multi-process Tether (0: skip it)")
    ap.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tether", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--least", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.least:
        run_least(int(a.least[0]), a.least[1], a.least[2], a.least[3])
        return
    if a.echo:
        run_echo(a.echo)
        return
    if a.tether:
        run_tether(Path(a.tether[0]), int(a.tether[1]), a.tether[2], int(a.tether[3]))
        return
    # A SIGTERM is handled as a Ctrl-C, which asyncio.run turns into a clean cancellation: children are stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    procs: list[subprocess.Popen[bytes]] = []
    cf: dict[str, Any] | None = None
    cf_status = ""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ep, tp = free_port(), free_port()
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            env["BENCH_TRANSPORT"] = "sdk" if a.sdk else "lean"
            if a.memory_audit:
                env["BENCH_AUDIT"] = "memory"
            procs.append(subprocess.Popen([sys.executable, __file__, "--echo", str(ep)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            wait_port(ep, procs[-1])
            upstream = f"http://127.0.0.1:{ep}/mcp"
            procs.append(subprocess.Popen([sys.executable, __file__, "--tether", tmp, str(tp), upstream, "1"], env=env))
            wait_port(tp, procs[-1])
            token = (Path(tmp) / "token").read_text()
            lp = free_port()
            procs.append(subprocess.Popen([sys.executable, __file__, "--least", str(lp), upstream, token,
                                           str(Path(tmp) / "least.db")], env=env))  # fmt: skip
            wait_port(lp, procs[-1])
            multi: tuple[str, str] | None = None
            if a.workers > 1:
                mp_dir, mport = Path(tmp) / "workers", free_port()
                mp_dir.mkdir()
                procs.append(subprocess.Popen([sys.executable, __file__, "--tether", str(mp_dir), str(mport), upstream,
                                               str(a.workers)], env=env))  # fmt: skip
                wait_ready(mport, procs[-1])
                multi = (f"http://127.0.0.1:{mport}/mcp", (mp_dir / "token").read_text())
            if a.contextforge:
                t0 = time.perf_counter()
                n = len(procs)
                try:
                    cf = start_contextforge(
                        Path(a.contextforge).absolute(), Path(tmp) / "contextforge", upstream, procs
                    )
                    cf_status = f"mcp-contextforge-gateway {cf['version']}"
                    print(f"ContextForge {cf['version']} ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                except Exception as e:  # noqa: BLE001 - whatever went wrong, the run goes on without it
                    cf_status = f"unavailable: {str(e)[:400]}"
                    print(f"ContextForge {cf_status}", file=sys.stderr)
                    stop(procs[n:])
                    del procs[n:]
            pids = (procs[1].pid, procs[3].pid if multi else None)
            r = asyncio.run(measure(upstream, f"http://127.0.0.1:{tp}/mcp", token, a.quick, cf, multi, pids,
                                    least_url=f"http://127.0.0.1:{lp}/mcp"))  # fmt: skip
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            stop(procs)
    if "contextforge_error" in r:
        cf, cf_status = None, f"unavailable: failed during the run: {r['contextforge_error']}"
        print(f"ContextForge {cf_status}", file=sys.stderr)
    added50 = r["gateway_p50_ms"] - r["direct_p50_ms"]
    added99 = r["gateway_p99_ms"] - r["direct_p99_ms"]
    print(f"MCP tools/call, echo tool, {r['samples']} sequential calls per path (interleaved blocks); "
          f"upstream transport {'sdk' if a.sdk else 'lean'}{', audit in memory' if a.memory_audit else ''}")  # fmt: skip
    w = 14 if cf else 10
    print(f"{'path':<{w}} {'p50 ms':>8} {'p99 ms':>8} {'calls/s c=1':>12} {'calls/s c=32':>13}")
    print(f"{'direct':<{w}} {r['direct_p50_ms']:>8.2f} {r['direct_p99_ms']:>8.2f} {r['direct_calls_per_s_1']:>12.0f} "
          f"{r['direct_calls_per_s_32']:>13.0f}")  # fmt: skip
    print(f"{'gateway':<{w}} {r['gateway_p50_ms']:>8.2f} {r['gateway_p99_ms']:>8.2f} {r['calls_per_s_1']:>12.0f} "
          f"{r['calls_per_s_32']:>13.0f}")  # fmt: skip
    if cf:

        def rate(v: float | str) -> str:
            return f"{v:.0f}" if isinstance(v, float) else "failed"

        print(f"{'contextforge':<{w}} {r['contextforge_p50_ms']:>8.2f} {r['contextforge_p99_ms']:>8.2f} "
              f"{rate(r['contextforge_calls_per_s_1']):>12} {rate(r['contextforge_calls_per_s_32']):>13}")  # fmt: skip
    if "workers_calls_per_s_32" in r:
        print(f"{f'{a.workers} workers':<{w}} {'':>8} {'':>8} {'':>12} {r['workers_calls_per_s_32']:>13.0f}")
    print(f"added: p50 {added50:+.2f} ms, p99 {added99:+.2f} ms; gateway/direct throughput at c=32: "
          f"{r['calls_per_s_32'] / r['direct_calls_per_s_32']:.2f}")  # fmt: skip
    least50 = r["least_p50_ms"] - r["direct_p50_ms"] if "least_p50_ms" in r else None
    if least50 is not None:
        print(f"the least durable gateway in the same blocks (every lookup a dict; a call's three events chained and "
              f"committed with fsync before an aiohttp forward): added p50 {least50:+.2f} ms, p99 "
              f"{r['least_p99_ms'] - r['direct_p99_ms']:+.2f} ms — Tether's own work is the difference, "
              f"{added50 - least50:.2f} ms")  # fmt: skip
    if r.get("cpu_ms_per_call_32") is not None:
        print(f"gateway CPU per call at c=32 (its process and children, /proc): {r['cpu_ms_per_call_32']:.3f} ms"
              + (f"; {a.workers} workers: {r['cpu_ms_per_call_32_workers']:.3f} ms"
                 if r.get("cpu_ms_per_call_32_workers") is not None else ""))  # fmt: skip
    figures = {"transport": "sdk" if a.sdk else "lean", "durable_audit": not a.memory_audit, "added_p50_ms": round(added50, 3), "added_p99_ms": round(added99, 3),
               "calls_per_s_32": round(max(r["calls_per_s_32"], r.get("workers_calls_per_s_32", 0)), 1),
               "calls_per_s_32_one_process": round(r["calls_per_s_32"], 1),
               "workers": a.workers if "workers_calls_per_s_32" in r else 1,
               "calls_per_s_32_workers": round(r["workers_calls_per_s_32"], 1) if "workers_calls_per_s_32" in r else None,
               "calls_per_s_1": round(r["calls_per_s_1"], 1),
               "cpu_ms_per_call_32": r.get("cpu_ms_per_call_32"),
               "cpu_ms_per_call_32_workers": r.get("cpu_ms_per_call_32_workers"),
               "least_gateway_added_p50_ms": round(least50, 3) if least50 is not None else None,
               **{k: round(v, 3) for k, v in r.items() if k.startswith("direct") or k.startswith("gateway")}}  # fmt: skip
    if cf:
        cf50 = r["contextforge_p50_ms"] - r["direct_p50_ms"]
        cf99 = r["contextforge_p99_ms"] - r["direct_p99_ms"]
        print(f"contextforge added: p50 {cf50:+.2f} ms, p99 {cf99:+.2f} ms; "
              f"contextforge added / gateway added (p50): {cf50 / added50 if added50 > 0 else float('nan'):.1f}")  # fmt: skip
        figures |= {"contextforge": cf_status, "contextforge_added_p50_ms": round(cf50, 3),
                    "contextforge_added_p99_ms": round(cf99, 3),
                    "contextforge_vs_tether_added_p50_ratio": round(cf50 / added50, 2) if added50 > 0 else None,
                    **{f"contextforge_calls_per_s_{c}": v if isinstance(v, str) else round(v, 1)
                       for c in (1, 32) for v in [r[f"contextforge_calls_per_s_{c}"]]},
                    "contextforge_p50_ms": round(r["contextforge_p50_ms"], 3),
                    "contextforge_p99_ms": round(r["contextforge_p99_ms"], 3)}  # fmt: skip
    elif a.contextforge:
        figures["contextforge"] = cf_status
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""MCP gateway overhead: `tools/call` of a trivial echo tool through Tether's /mcp versus directly.

Three processes share the machine: the upstream (the `mcp` SDK's MCPServer, streamable HTTP,
JSON responses), Tether (`tether serve`'s app under uvicorn + uvloop, SQLite, the echo tool
pinned and catalogued as read-only, the default policy pack) and this load generator (aiohttp, raw JSON-RPC, the same client
for both paths). Direct and gateway blocks are interleaved so machine load hits both alike.

Every gateway call is fully processed: task token verified, tool mapped, decided, and
`tool.requested` + `policy.decided` made durable (SQLite, synchronous=FULL) before forwarding;
`tool.completed` after. While the policy engine and the group-commit audit writer have not
landed, this script supplies an allow-all decision and a group-commit writer to the real chain
(used only when `services.policy` / `services.audit` are missing).

    python bench/mcp_gateway.py [--quick]

Last line: JSON with added_p50_ms, added_p99_ms, calls_per_s_32 (and the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


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


def run_tether(workdir: Path, port: int, upstream: str) -> None:
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
    echo = {"url": upstream, "max_concurrency": 256, "tools": {"echo": {"annotations": harmless}},
            "transport": os.environ.get("BENCH_TRANSPORT", "lean")}  # fmt: skip
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
    app = create_app(services)
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        cProfile.runctx("uvicorn.run(app, host='127.0.0.1', port=port, log_level='warning', access_log=False, "
                        "loop='uvloop', http='httptools')", globals(), locals(), os.environ["BENCH_PROFILE"])  # fmt: skip
        return
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


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


async def throughput(make: Any, tool: str, concurrency: int, seconds: float) -> float:
    clients = [await make() for _ in range(concurrency)]
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


async def measure(direct_url: str, gw_url: str, token: str, quick: bool) -> dict[str, Any]:
    import aiohttp

    conn = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def make_direct() -> Client:
            c = Client(http, direct_url, None)
            await c.open()
            return c

        async def make_gw() -> Client:
            c = Client(http, gw_url, token)
            await c.open()
            return c

        d, g = await make_direct(), await make_gw()
        await timed(d, "echo", 50)
        await timed(g, "echo__echo", 50)
        blocks, per = (4, 100) if quick else (10, 200)
        direct: list[float] = []
        gateway: list[float] = []
        for _ in range(blocks):
            direct += await timed(d, "echo", per)
            gateway += await timed(g, "echo__echo", per)
        secs = 3.0 if quick else 8.0
        res = {
            "direct_p50_ms": statistics.median(direct), "direct_p99_ms": pct(direct, 0.99),
            "gateway_p50_ms": statistics.median(gateway), "gateway_p99_ms": pct(gateway, 0.99),
            "calls_per_s_1": await throughput(make_gw, "echo__echo", 1, secs),
            "direct_calls_per_s_1": await throughput(make_direct, "echo", 1, secs),
            "calls_per_s_32": await throughput(make_gw, "echo__echo", 32, secs),
            "direct_calls_per_s_32": await throughput(make_direct, "echo", 32, secs),
            "samples": len(gateway),
        }  # fmt: skip
        return res


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (< 60 s)")
    ap.add_argument(
        "--sdk", action="store_true", help="reach the upstream with the SDK's ClientSession (default: lean)"
    )
    ap.add_argument("--memory-audit", action="store_true",
                    help="diagnosis: audit events kept in memory (no durable write), to split the added cost")  # fmt: skip
    ap.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tether", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.echo:
        run_echo(a.echo)
        return
    if a.tether:
        run_tether(Path(a.tether[0]), int(a.tether[1]), a.tether[2])
        return
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ep, tp = free_port(), free_port()
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            env["BENCH_TRANSPORT"] = "sdk" if a.sdk else "lean"
            if a.memory_audit:
                env["BENCH_AUDIT"] = "memory"
            procs.append(subprocess.Popen([sys.executable, __file__, "--echo", str(ep)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            wait_port(ep, procs[-1])
            upstream = f"http://127.0.0.1:{ep}/mcp"
            procs.append(subprocess.Popen([sys.executable, __file__, "--tether", tmp, str(tp), upstream], env=env))
            wait_port(tp, procs[-1])
            token = (Path(tmp) / "token").read_text()
            r = asyncio.run(measure(upstream, f"http://127.0.0.1:{tp}/mcp", token, a.quick))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    added50 = r["gateway_p50_ms"] - r["direct_p50_ms"]
    added99 = r["gateway_p99_ms"] - r["direct_p99_ms"]
    print(f"MCP tools/call, echo tool, {r['samples']} sequential calls per path (interleaved blocks); "
          f"upstream transport {'sdk' if a.sdk else 'lean'}{', audit in memory' if a.memory_audit else ''}")  # fmt: skip
    print(f"{'path':<10} {'p50 ms':>8} {'p99 ms':>8} {'calls/s c=1':>12} {'calls/s c=32':>13}")
    print(f"{'direct':<10} {r['direct_p50_ms']:>8.2f} {r['direct_p99_ms']:>8.2f} {r['direct_calls_per_s_1']:>12.0f} "
          f"{r['direct_calls_per_s_32']:>13.0f}")  # fmt: skip
    print(f"{'gateway':<10} {r['gateway_p50_ms']:>8.2f} {r['gateway_p99_ms']:>8.2f} {r['calls_per_s_1']:>12.0f} "
          f"{r['calls_per_s_32']:>13.0f}")  # fmt: skip
    print(f"added: p50 {added50:+.2f} ms, p99 {added99:+.2f} ms; gateway/direct throughput at c=32: "
          f"{r['calls_per_s_32'] / r['direct_calls_per_s_32']:.2f}")  # fmt: skip
    figures = {"transport": "sdk" if a.sdk else "lean", "durable_audit": not a.memory_audit, "added_p50_ms": round(added50, 3), "added_p99_ms": round(added99, 3),
               "calls_per_s_32": round(r["calls_per_s_32"], 1), "calls_per_s_1": round(r["calls_per_s_1"], 1),
               **{k: round(v, 3) for k, v in r.items() if k.startswith("direct") or k.startswith("gateway")}}  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

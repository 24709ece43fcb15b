"""The MCP gateway is a faithful proxy: `@modelcontextprotocol/server-everything` behind Tether's
/mcp passes every server scenario of `@modelcontextprotocol/conformance@0.1.10` that it passes
when the suite reaches it directly (allow-all policy, every tool pinned).

The suite cannot send a bearer token, so it talks to a loopback relay that adds the task
token to each request and forwards it to /mcp unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import free_port
from tests.http_gateway_world import Served
from tests.mcp_world import World, build_world

NODE = Path(__file__).parent / "node"
EVERYTHING = NODE / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
CONFORMANCE = NODE / "node_modules" / ".bin" / "conformance"
SUMMARY = re.compile(r"^[✓✗] (\S+): (\d+) passed, (\d+) failed", re.M)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (EVERYTHING.exists() and CONFORMANCE.exists() and shutil.which("node")),
        reason="npm ci in tests/e2e/node first (CI does)",
    ),
]


@pytest.fixture(scope="module")
def everything() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(["node", str(EVERYTHING), "streamableHttp"], env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
                break
            except httpx.TransportError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def run_suite(url: str, out: Path) -> dict[str, bool]:
    """scenario → passed, from the suite's summary."""
    r = subprocess.run([str(CONFORMANCE), "server", "--url", url, "-o", str(out)], capture_output=True, text=True,
                       timeout=600, cwd=NODE)  # fmt: skip
    results = {m.group(1): m.group(3) == "0" and int(m.group(2)) > 0 for m in SUMMARY.finditer(r.stdout)}
    assert results, r.stdout[-2000:] + r.stderr[-2000:]
    return results


def token_relay(w: World) -> Starlette:
    """Adds the task token to each request and forwards it to /mcp (what an MCP client with a token does)."""
    client = httpx.AsyncClient(timeout=60)
    keep = ("content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id")

    async def relay(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in keep}
        headers["authorization"] = f"Bearer {w.token()}"
        r = await client.request(request.method, w.url, content=await request.body(), headers=headers)
        back = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "mcp-session-id", "allow")}
        return Response(r.content, status_code=r.status_code, headers=back)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(routes=[Route("/mcp", relay, methods=["GET", "POST", "DELETE"])], lifespan=lifespan)


@pytest.fixture(params=["sdk", "lean"])
def world(request: pytest.FixtureRequest, tmp_path: Path, db_url: str, everything: str) -> Iterator[World]:
    servers = {"everything": {"url": everything, "timeout": 30, "transport": request.param}}
    yield from build_world(tmp_path, db_url, servers=servers, allow_all=True, namespace=False)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_server_everything_behind_the_gateway_passes_what_it_passes_directly(
    world: World, everything: str, tmp_path: Path
) -> None:
    """Every conformance scenario server-everything passes directly also passes through Tether."""
    await world.pin_all()
    direct = run_suite(everything, tmp_path / "direct")
    with Served(token_relay(world)) as relay:
        gated = run_suite(f"{relay.base}/mcp", tmp_path / "gated")
    passing = sorted(s for s, ok in direct.items() if ok)
    assert passing, direct
    lost = [s for s in passing if not gated.get(s)]
    assert not lost, f"pass directly but fail through the gateway: {lost}"

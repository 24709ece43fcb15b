"""`tether quickstart --workers 2`: two server processes on one port and one database act as one service.

Every request below opens a new connection, so the kernel hands it to either worker. The test
checks that both workers served, that an MCP session opened on one works on the other, that a
task's item budget holds across them (the default pack asks for approval from 500 items read),
that the audit chain both wrote verifies, and that /metrics counts every worker's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_quickstart import TETHER, exchange, running_demo

pytestmark = pytest.mark.slow

MAIL = "/proxy/m365/v1.0/users/alice@contoso.example/messages"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_demo(tmp_path_factory.mktemp("workers"), workers=2) as d:
        yield d


def fresh(method: str, url: str, **kw: object) -> httpx.Response:
    """One request on a connection of its own (so either worker may take it)."""
    with httpx.Client(timeout=30) as c:
        return c.request(method, url, **kw)  # type: ignore[arg-type]


def worker_pids(data: str) -> set[str]:
    """Processes that wrote Prometheus figures (prometheus_client names its files <kind>_<pid>.db)."""
    return {p.stem.rsplit("_", 1)[-1] for p in (Path(data) / "metrics").glob("*.db")}


def open_session(demo: dict[str, str], purpose: str) -> tuple[dict[str, str], str]:
    """A task token for /mcp (scope mcp:read) and a session it opened: (Authorization header, session id)."""
    base = demo["base"]
    auth = {"Authorization": f"Bearer {exchange(demo, 'mcp:read', base + '/mcp', purpose)}"}
    init = fresh("POST", base + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                 headers=auth)  # fmt: skip
    return auth, init.headers["mcp-session-id"]


def test_both_workers_serve_and_metrics_count_them_all(demo: dict[str, str]) -> None:
    base = demo["base"]
    for _ in range(40):
        assert fresh("GET", base + "/healthz").status_code == 200
    assert len(worker_pids(demo["data"])) >= 2, "one worker took every connection"
    text = fresh("GET", base + "/metrics").text
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tether_http_requests_total{") and 'route="/healthz"' in line
    )
    assert served >= 40  # one worker alone answered only its share


def test_an_mcp_session_opened_on_one_worker_works_on_the_other(demo: dict[str, str]) -> None:
    base = demo["base"]
    auth, sid = open_session(demo, "notes across workers")
    for i in range(20):
        r = fresh("POST", base + "/mcp", headers={**auth, "Mcp-Session-Id": sid}, json={
            "jsonrpc": "2.0", "id": 2 + i, "method": "tools/call",
            "params": {"name": "notes__search_notes", "arguments": {"query": "q3"}}})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["result"]["isError"] is False


def test_a_result_named_as_parent_is_accepted_by_every_worker_at_once(demo: dict[str, str]) -> None:
    """Each call names the previous call's result as its parent, on a connection of its own, at once: whichever
    worker answered the result (its tool.completed not committed yet, perhaps), whichever takes the next call
    accepts it, and the hops are recorded as one chain."""
    base = demo["base"]
    auth, sid = open_session(demo, "hops across workers")
    parent: str | None = None
    for i in range(20):
        meta = {"_meta": {"io.tether/parent": parent}} if parent else {}
        r = fresh("POST", base + "/mcp", headers={**auth, "Mcp-Session-Id": sid}, json={
            "jsonrpc": "2.0", "id": 2 + i, "method": "tools/call",
            "params": {"name": "notes__search_notes", "arguments": {"query": "q3"}, **meta}})  # fmt: skip
        result = r.json()["result"]
        assert result["isError"] is False, result
        parent = result["_meta"]["io.tether/event"]


def test_an_mcp_session_ended_on_one_worker_is_refused_by_every_worker(demo: dict[str, str]) -> None:
    """MCP: once a session is ended (DELETE) the server answers 404 for its id, whichever worker takes the
    request. A worker learns of the end with its revocation watcher, inside the bound that also holds for
    revoked tokens (STALE_SECONDS: past it a worker that has not read the table refuses every token)."""
    from tether.tokens.revocation import STALE_SECONDS

    base = demo["base"]
    auth, sid = open_session(demo, "a session to end")
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert fresh("POST", base + "/mcp", headers={**auth, "Mcp-Session-Id": sid}, json=listing).status_code == 200
    assert fresh("DELETE", base + "/mcp", headers={**auth, "Mcp-Session-Id": sid}).status_code == 200
    time.sleep(STALE_SECONDS + 0.5)
    codes = [fresh("POST", base + "/mcp", headers={**auth, "Mcp-Session-Id": sid}, json=listing).status_code
             for _ in range(20)]  # fmt: skip
    assert codes == [404] * 20


def test_a_task_budget_holds_across_workers(demo: dict[str, str]) -> None:
    """25 messages a page: pages are allowed until the task has read 500 items, on whichever worker;
    from then on (once the workers have polled), every page waits for approval, on every worker."""
    base = demo["base"]
    token = exchange(demo, "mail:read", base + "/proxy/m365", "read everything")
    auth = {"Authorization": f"Bearer {token}"}
    read = 0
    while read < 500:
        r = fresh("GET", base + MAIL, params={"$top": "25"}, headers=auth)
        assert r.status_code == 200, (read, r.text)
        read += len(r.json()["value"])
    time.sleep(1.0)  # > the lazy outcome window plus two polls (0.25 s)
    for _ in range(12):
        r = fresh("GET", base + MAIL, params={"$top": "1"}, headers=auth)
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "approval_required"


async def _concurrent(base: str, auth: dict[str, str], n: int) -> list[int]:
    async def one() -> int:
        async with httpx.AsyncClient(timeout=30) as c:
            return (await c.get(base + MAIL, params={"$top": "1"}, headers=auth)).status_code

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_the_chain_both_workers_wrote_verifies(demo: dict[str, str]) -> None:
    base = demo["base"]
    token = exchange(demo, "mail:read", base + "/proxy/m365", "concurrent")
    statuses = asyncio.run(_concurrent(base, {"Authorization": f"Bearer {token}"}, 48))
    assert statuses == [200] * 48
    r = subprocess.run([TETHER, "audit", "verify", "--data-dir", demo["data"]], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    admin = {"Authorization": f"Bearer {demo['admin']}"}
    decided = fresh("GET", base + "/v1/audit", params={"type": "policy.decided", "limit": "1000"}, headers=admin)
    assert decided.status_code == 200, decided.text
    instances = {e["detail"].get("instance") for e in decided.json()["items"]}
    assert len(instances - {None}) >= 2  # each worker stamps its decisions with its own instance id


def test_a_worker_that_dies_is_replaced_and_the_service_keeps_serving(demo: dict[str, str]) -> None:
    import os
    import signal

    base = demo["base"]
    before = worker_pids(demo["data"])
    victim = int(sorted(before)[0])
    os.kill(victim, signal.SIGKILL)
    deadline = time.time() + 60
    new: set[str] = set()
    while time.time() < deadline and not new:
        # The survivor answers meanwhile, the replacement once it is up; a connection the kernel had
        # queued on the dead worker's socket is reset (SO_REUSEPORT), as with any process that dies.
        with contextlib.suppress(httpx.TransportError):
            assert fresh("GET", base + "/healthz").status_code == 200
        new = worker_pids(demo["data"]) - before
        time.sleep(0.1)
    assert new, "no replacement worker served"
    for _ in range(20):  # and from then on, every connection is served
        assert fresh("GET", base + "/healthz").status_code == 200

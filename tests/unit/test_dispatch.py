"""Hot paths (/proxy/, /mcp) skip FastAPI's middleware stack but keep its request metrics and 500 answer."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tether.api import problems
from tether.api.app import MetricsMiddleware, RequestMetrics, TetherApp
from tether.api.dispatch import Dispatch, HotPaths
from tether.metrics import Metrics


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise RuntimeError("boom")


def app() -> tuple[TetherApp, Metrics]:
    a = TetherApp()
    problems.install(a)

    @a.get("/v1/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    metrics = Metrics()
    a.request_metrics = RequestMetrics(metrics)
    a.add_middleware(MetricsMiddleware, metrics=a.request_metrics)  # as create_app does, for the other routes
    a.hot = HotPaths([Dispatch(ok, prefix="/proxy/"), Dispatch(broken, path="/mcp")])
    return a, metrics


def count(metrics: Metrics, route: str, method: str, status: str) -> float:
    value = metrics.registry.get_sample_value(
        "tether_http_requests_total", {"route": route, "method": method, "status": status}
    )
    return value or 0.0


def test_hot_paths_reach_their_target_and_are_counted() -> None:
    a, metrics = app()
    with TestClient(a) as c:
        r = c.get("/proxy/m365/v1.0/me")
        assert (r.status_code, r.text) == (201, "/proxy/m365/v1.0/me")
        assert c.get("/v1/ping").json() == {"ok": "yes"}
        assert c.get("/proxyx").status_code == 404  # not the prefix: the router answers
    assert count(metrics, "/proxy", "GET", "201") == 1
    assert count(metrics, "/v1/ping", "GET", "200") == 1


def test_an_unexpected_error_on_a_hot_path_is_the_500_problem_and_reraised() -> None:
    a, metrics = app()
    with TestClient(a, raise_server_exceptions=False) as c:
        r = c.post("/mcp", json={})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "internal_error"
    assert count(metrics, "/mcp", "POST", "500") == 1
    with TestClient(a) as c, pytest.raises(RuntimeError, match="boom"):
        c.post("/mcp", json={})


def test_a_dispatch_names_exactly_one_of_path_and_prefix() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Dispatch(ok)
    with pytest.raises(ValueError, match="ends with"):
        Dispatch(ok, prefix="/proxy")
    assert Dispatch(ok, prefix="/proxy/").template == "/proxy"

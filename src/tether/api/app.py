"""The ASGI application: admin API, OAuth endpoints, gateways and console on one server."""

from __future__ import annotations

import gc
import inspect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether import __version__
from tether.api import problems
from tether.api.dispatch import HotPaths
from tether.api.routes import approvals, health, identity, oauth, policy, tasks
from tether.api.wiring import Services
from tether.log import get_logger
from tether.metrics import Metrics

log = get_logger("tether.server")


class RequestMetrics:
    """Request count and latency by route label, method and status; the labelled children are looked up once."""

    MAX_CHILDREN = 4096  # methods come from clients: past this many label sets, look up without keeping them

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.metrics.http_requests.labels(route, method, str(status)),
                self.metrics.http_latency.labels(route),
            )
            if len(self._children) < self.MAX_CHILDREN:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class MetricsMiddleware:
    """Counts requests by route template (bounded label set) with one clock read each side."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "/" + scope["path"].lstrip("/").split("/", 1)[0]
            self.metrics.observe(template, scope["method"], status, time.perf_counter() - start)


class TetherApp(FastAPI):
    """FastAPI, with the gateways' hot paths (`tether.api.dispatch`) dispatched ahead of its middleware stack.

    A hot path keeps what the stack gave it: the request metrics (`MetricsMiddleware`'s labels) and,
    for an exception escaping the gateway, Starlette's `ServerErrorMiddleware` behaviour (the installed
    500/Exception handler's answer when nothing was sent yet, then the exception re-raised for the server).
    """

    hot: HotPaths = HotPaths([])
    request_metrics: RequestMetrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hot and not self.debug:
            hit = self.hot.find(scope["path"])
            if hit is not None:
                await self._hot(hit[0], hit[1], scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _hot(self, target: ASGIApp, route: str, scope: Scope, receive: Receive, send: Send) -> None:
        if self.root_path:
            scope["root_path"] = self.root_path
        scope["app"] = self
        start = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await target(scope, receive, send_status)
        except Exception as exc:
            if not status:
                response = await self._server_error(scope, exc)
                await response(scope, receive, send)
            raise
        finally:
            if self.request_metrics is not None:
                self.request_metrics.observe(route, scope["method"], status or 500, time.perf_counter() - start)

    async def _server_error(self, scope: Scope, exc: Exception) -> Response:
        handler = None
        for key, value in self.exception_handlers.items():  # as FastAPI's build_middleware_stack picks it
            if key in (500, Exception):
                handler = value
        if handler is None:
            return PlainTextResponse("Internal Server Error", status_code=500)
        if inspect.iscoroutinefunction(handler):
            response = await handler(Request(scope), exc)
        else:
            response = await run_in_threadpool(handler, Request(scope), exc)
        assert isinstance(response, Response)
        return response


def _freeze_heap() -> None:
    """Put what start-up built (modules, the policy bundle, engines, SQL metadata) beyond the cyclic GC.

    A full collection walks every tracked object; with the start-up heap in it, the collections that
    ran under load paused the event loop long enough to set the tail: measured with the HTTP gateway
    at 32 clients, p99 164–195 ms before, 69–72 ms after (and 5–10% more requests per second).
    Reference counting still frees these objects; only cycle detection skips them until shutdown. No
    collection first: in a long-lived process (the tests start hundreds of apps) a full collection
    costs more than the few cycles of start-up garbage it would spare.
    """
    gc.freeze()


def create_app(services: Services) -> TetherApp:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = []
        try:
            for name, start, stop in services.lifecycle:
                await start()
                started.append((name, stop))
                log.info("started", component=name)
            _freeze_heap()
            yield
        finally:
            gc.unfreeze()
            for name, stop in reversed(started):
                try:
                    await stop()
                except Exception as exc:  # noqa: BLE001 — shutting down: log and stop the rest
                    log.error("stop failed", component=name, error=repr(exc))

    app = TetherApp(
        title="Tether",
        version=__version__,
        summary="Govern AI assistants acting for people: identity, task tokens, policy, approvals, audit.",
        lifespan=lifespan,
        **_no_native_telemetry(),
    )
    app.state.services = services
    app.state.metrics = services.metrics
    problems.install(app)
    app.include_router(health.router)
    app.include_router(identity.router)
    app.include_router(approvals.router)
    app.include_router(oauth.router)
    app.include_router(tasks.router)
    app.include_router(policy.router)
    for mount in services.extras.get("routers", []):
        app.include_router(mount)
    for path, sub in services.extras.get("mounts", []):
        app.mount(path, sub)
    from tether.console import create_console  # the console is an outer layer over the same services

    app.mount("/console", create_console(services))
    # (middleware class, kwargs) of other contexts
    for middleware, kwargs in services.extras.get("middleware", []):
        app.add_middleware(middleware, **kwargs)
    app.request_metrics = RequestMetrics(app.state.metrics)
    app.add_middleware(MetricsMiddleware, metrics=app.request_metrics)
    # hot paths that must not pay for the middleware stack and the router (/proxy/, /mcp): Dispatch entries
    app.hot = HotPaths(services.extras.get("dispatch", []))
    return app


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI ≥ 0.16x asks OpenTelemetry for its providers on every request (environment lookups included),
    a measurable part of a gateway call; Tether exports Prometheus metrics itself, so that is switched off
    where the running FastAPI has the option."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def openapi_document(services: Services) -> dict[str, Any]:
    return create_app(services).openapi()


__all__ = ["TetherApp", "create_app"]

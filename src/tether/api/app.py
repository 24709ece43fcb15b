"""The ASGI application: admin API, OAuth endpoints, gateways and console on one server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether import __version__
from tether.api import problems
from tether.api.routes import approvals, health, identity, oauth, policy, tasks
from tether.api.wiring import Services
from tether.log import get_logger
from tether.metrics import Metrics

log = get_logger("tether.server")


class MetricsMiddleware:
    """Counts requests by route template (bounded label set) with one clock read each side."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
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
            self.metrics.http_requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.http_latency.labels(template).observe(time.perf_counter() - start)


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = []
        try:
            for name, start, stop in services.lifecycle:
                await start()
                started.append((name, stop))
                log.info("started", component=name)
            yield
        finally:
            for name, stop in reversed(started):
                try:
                    await stop()
                except Exception as exc:  # noqa: BLE001 — shutting down: log and stop the rest
                    log.error("stop failed", component=name, error=repr(exc))

    app = FastAPI(
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
    # hot paths that must not pay for the router's matching (e.g. /proxy/): (middleware class, kwargs)
    for middleware, kwargs in services.extras.get("middleware", []):
        app.add_middleware(middleware, **kwargs)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI ≥ 0.16x asks OpenTelemetry for its providers on every request (environment lookups included),
    a measurable part of a gateway call; Tether exports Prometheus metrics itself, so that is switched off
    where the running FastAPI has the option."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def openapi_document(services: Services) -> dict[str, Any]:
    return create_app(services).openapi()


__all__ = ["create_app"]

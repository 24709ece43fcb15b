"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.responses import JSONResponse, Response

from tether.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is not ready"}})
def readyz(svc: ServicesDep) -> Any:
    """Ready to serve: the database answers and every context's keys and bundles are loaded."""
    checks = {}
    for name, check in svc.ready_checks.items():
        try:
            checks[name] = bool(check())
        except Exception:  # noqa: BLE001 — a readiness probe reports any failure as not ready
            checks[name] = False
    ok = all(checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(_registry(request.app.state.metrics.registry)), media_type=CONTENT_TYPE_LATEST)


def _registry(own: CollectorRegistry) -> CollectorRegistry:
    """This process's registry; under `tether serve --workers`, all workers' figures merged."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return own
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
    return merged

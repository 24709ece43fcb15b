"""`tether serve --workers N`: N server processes on one port and one database, acting as one service.

    tether serve --workers 2
      parent: migrate ─► start-up recovery (once) ─► metrics directory ─► bind the port
        └─► uvicorn spawns N workers; each imports `app()` and builds its own Services

Why processes: a Python event loop runs on one core; the gateways' hot path (token, decision,
audit, forward) is CPU work, so a second core serves a second stream of calls. Everything the
processes must agree on lives in the database or is derived from it: the audit chain (each
batch reads the head under the write lock), task budgets (`task_usage`, committed with the
events), approvals (one conditional update), revocations and break-glass (polled, and LISTEN on
PostgreSQL), tool pins (re-read every few seconds). MCP session ids are signed, so any worker
accepts a session another opened. Start-up recovery runs once here, before any worker serves:
a worker starting later must never mark a sibling's call in flight as "unknown".

Prometheus figures are merged across workers through a shared directory (prometheus_client's
multiprocess mode), emptied at each start.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

#: the settings `tether serve` was given on its command line, for the workers (the environment is inherited)
ENV = "TETHER_WORKER_SETTINGS"
METRICS_DIR = "metrics"


def serve_workers(settings: Any, overrides: dict[str, Any], workers: int) -> None:
    """Run `workers` server processes (blocks until they stop)."""
    import uvicorn

    from tether.audit.query import recover
    from tether.store.db import Database
    from tether.store.migrate import upgrade

    upgrade(settings.url)
    db = Database(settings.url)
    try:
        recover(db)  # once, while no worker serves
    finally:
        db.dispose()
    metrics = Path(settings.data_dir) / METRICS_DIR
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir(mode=0o700, parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    os.environ[ENV] = json.dumps({k: str(v) for k, v in overrides.items() if v is not None})
    uvicorn.run(
        "tether.api.workers:app", factory=True, workers=workers, host=settings.host, port=settings.port,
        log_level="warning", access_log=False, loop="uvloop", http="httptools", timeout_graceful_shutdown=5,
    )  # fmt: skip


def app() -> Any:
    """One worker's ASGI app (called by uvicorn in each spawned process)."""
    import atexit

    from tether.api.app import create_app
    from tether.api.wiring import build_services
    from tether.config import Settings
    from tether.log import configure

    settings = Settings(**json.loads(os.environ.get(ENV, "{}")))
    configure(settings.log_level)
    svc = build_services(settings, migrate=False, recover=False)
    atexit.register(svc.close)
    return create_app(svc)


__all__ = ["ENV", "app", "serve_workers"]

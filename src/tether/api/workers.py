"""`tether serve --workers N`: N server processes on one port and one database, acting as one service.

    tether serve --workers 2
      parent: migrate ─► start-up recovery (once) ─► metrics directory ─► spawn N workers, watch them
        └─► each worker: its own Services, its own socket on the port (SO_REUSEPORT), uvicorn

Why processes: a Python event loop runs on one core; the gateways' hot path (token, decision,
audit, forward) is CPU work, so a second core serves a second stream of calls. Each worker binds
its own listening socket with SO_REUSEPORT, so the kernel spreads new connections evenly; with
one shared socket, the first worker to wake takes every connection of a burst (measured here:
one worker at 100% CPU, the other idle). Linux lets only sockets of the same user share a port.

Everything the processes must agree on lives in the database or is derived from it: the audit
chain (each batch reads the head under the write lock), task budgets (`task_usage`, counted
from the committed events), approvals (one conditional update), revocations and break-glass (polled, and
LISTEN on PostgreSQL), tool pins (re-read every few seconds). MCP session ids are signed, so any
worker accepts a session another opened. Start-up recovery runs once here, before any worker
serves, and it leaves alone the calls of instances still alive elsewhere (other hosts on one
PostgreSQL); a worker starting later must never mark a sibling's call in flight as "unknown". A
worker that dies is started again; the calls it had in flight are marked "unknown" by the next
sweep of any living instance (`tether.audit.instances`). One that dies within seconds of
starting twice in a row stops the service, so a broken configuration fails loudly instead of
looping.

Prometheus figures are merged across workers through a shared directory (prometheus_client's
multiprocess mode), emptied at each start.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from tether.log import get_logger

log = get_logger("tether.serve")

#: the settings `tether serve` was given on its command line, for the workers (the environment is inherited)
ENV = "TETHER_WORKER_SETTINGS"
METRICS_DIR = "metrics"
EARLY_DEATH = 5.0  # seconds: a worker dying sooner than this after its start counts as a failed start


def serve_workers(settings: Any, overrides: dict[str, Any], workers: int) -> None:
    """Run `workers` server processes on settings.host:settings.port (blocks until stopped)."""
    from tether.audit.instances import live_instances
    from tether.audit.query import recover
    from tether.audit.results import namer
    from tether.crypto import load_master_key
    from tether.store.db import Database
    from tether.store.migrate import upgrade

    upgrade(settings.url)
    db = Database(settings.url)
    try:
        # once, before any worker serves (other hosts' calls are left alone)
        recover(db, live=live_instances(db), name_result=namer(load_master_key(settings)))
    finally:
        db.dispose()
    try:  # bound alone first: another service listening there (even with SO_REUSEPORT) is an error, not a partner
        _listening_socket(settings.host, settings.port, share=False).close()
    except OSError as exc:
        raise SystemExit(f"tether serve: cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    metrics = Path(settings.data_dir) / METRICS_DIR
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir(mode=0o700, parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    os.environ[ENV] = json.dumps({k: str(v) for k, v in overrides.items() if v is not None})

    ctx = mp.get_context("spawn")
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    procs: list[tuple[Any, float]] = []
    failed_starts = 0
    try:
        for _ in range(workers):
            procs.append(_start(ctx, settings.host, settings.port))
        while not stopping:
            time.sleep(0.2)
            for i, (proc, started) in enumerate(procs):
                if proc.is_alive() or stopping:
                    continue
                early = time.monotonic() - started < EARLY_DEATH
                failed_starts = failed_starts + 1 if early else 0
                log.error("worker stopped", pid=proc.pid, exitcode=proc.exitcode, restarting=failed_starts < 2)
                _forget_metrics(proc.pid)
                if failed_starts >= 2:
                    raise SystemExit("tether serve: workers die as they start; see the log above")
                procs[i] = _start(ctx, settings.host, settings.port)
    finally:
        for proc, _ in procs:
            if proc.is_alive():
                proc.terminate()  # uvicorn's graceful shutdown: the lifespan stops the audit writer
        deadline = time.monotonic() + 15
        for proc, _ in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _forget_metrics(pid: int) -> None:
    """A dead worker's live gauges no longer count (its counters still do)."""
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    except OSError as exc:
        log.error("metrics of a dead worker not cleared", pid=pid, error=repr(exc))


def _start(ctx: Any, host: str, port: int) -> tuple[Any, float]:
    proc = ctx.Process(target=_worker, args=(host, port), name="tether-worker")
    proc.start()
    return proc, time.monotonic()


def _listening_socket(host: str, port: int, *, share: bool = True) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int) -> None:
    """One worker process: its own socket on the shared port, its own Services, uvicorn."""
    import uvicorn

    from tether.api.http_protocol import HttpProtocol

    sock = _listening_socket(host, port)
    config = uvicorn.Config(app, factory=True, log_level="warning", access_log=False, loop="uvloop",
                            http=HttpProtocol, timeout_graceful_shutdown=5)  # fmt: skip
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if _services:  # multiprocessing's children skip atexit
            _services.pop().close()


#: the Services of this worker (closed when its server stops)
_services: list[Any] = []


def app() -> Any:
    """One worker's ASGI app."""
    from tether.api.app import create_app
    from tether.api.wiring import build_services
    from tether.config import Settings
    from tether.log import configure

    settings = Settings(**json.loads(os.environ.get(ENV, "{}")))
    configure(settings.log_level)
    svc = build_services(settings, migrate=False, recover=False)
    _services.append(svc)
    return create_app(svc)


__all__ = ["ENV", "app", "serve_workers"]

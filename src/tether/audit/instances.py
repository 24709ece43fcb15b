"""Which server processes are alive: each serving process beats a heartbeat into the database.

Start-up recovery gives an allowed call without a recorded outcome the outcome "unknown". With
several processes on one database (`tether serve --workers N`, or several servers on one
PostgreSQL), a call in flight in another, living process is not lost: it only has no outcome
*yet*. So every `policy.decided` names the instance that decided it, each instance refreshes
its row every HEARTBEAT seconds, and recovery marks only the calls of instances whose heartbeat
is older than LIVE_WINDOW (or that left, or that predate instance ids). Each instance also
sweeps every SWEEP seconds, so the calls of a worker that crashed are marked without waiting
for the next full restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from tether.audit.results import ResultNamer
from tether.background import stop_task
from tether.log import get_logger
from tether.store.db import Database
from tether.store.schema.audit import server_instances
from tether.types import new_id, rfc3339, utcnow

log = get_logger("tether.audit")

HEARTBEAT = 5.0
LIVE_WINDOW = timedelta(seconds=30)
SWEEP = 60.0
FORGET_AFTER = timedelta(days=1)


def live_instances(db: Database, now: datetime | None = None) -> frozenset[str]:
    """Instances whose heartbeat is fresher than LIVE_WINDOW — less those of this host whose process is gone
    (a server restarted right after a crash recovers its predecessor's calls at once, not a window later)."""
    since = rfc3339((now or utcnow()) - LIVE_WINDOW)
    t = server_instances.c
    with db.read() as conn:
        rows = conn.execute(select(t.id, t.host, t.pid).where(t.heartbeat_at >= since)).all()
    here = socket.gethostname()[:255]
    return frozenset(r[0] for r in rows if r[1] != here or _running(int(r[2])))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class Instance:
    """This process as a server instance: its id, its heartbeat, and the periodic recovery sweep."""

    def __init__(self, db: Database, *, name_result: ResultNamer | None = None) -> None:
        self.db = db
        self.id = new_id("ins")
        self.name_result = name_result  # MCP outcomes recovered take their results' ids (`tether.audit.results`)
        self._task: asyncio.Task[None] | None = None

    def beat(self) -> None:
        now = rfc3339(utcnow())
        t = server_instances.c
        with self.db.write() as conn:
            done = conn.execute(update(server_instances).where(t.id == self.id).values(heartbeat_at=now)).rowcount
            if not done:
                conn.execute(server_instances.insert().values(
                    id=self.id, host=socket.gethostname()[:255], pid=os.getpid(), started_at=now, heartbeat_at=now,
                ))  # fmt: skip
                conn.execute(delete(server_instances).where(t.heartbeat_at < rfc3339(utcnow() - FORGET_AFTER)))

    def leave(self) -> None:
        with self.db.write() as conn:
            conn.execute(delete(server_instances).where(server_instances.c.id == self.id))

    def sweep(self) -> int:
        from tether.audit.query import recover

        return recover(self.db, live=live_instances(self.db) | {self.id}, name_result=self.name_result)

    async def start(self) -> None:
        await asyncio.to_thread(self.beat)  # alive before the first call is decided
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        with contextlib.suppress(Exception):  # leaving is a courtesy: a stale heartbeat says the same
            await asyncio.to_thread(self.leave)

    async def _run(self) -> None:
        since_sweep = 0.0
        while True:
            await asyncio.sleep(HEARTBEAT)
            since_sweep += HEARTBEAT
            try:
                await asyncio.to_thread(self.beat)
                if since_sweep >= SWEEP:
                    since_sweep = 0.0
                    found = await asyncio.to_thread(self.sweep)
                    if found:
                        log.warning("calls of stopped server instances marked unknown", calls=found)
            except Exception as exc:  # noqa: BLE001 — a watcher logs and keeps watching
                log.error("instance heartbeat failed", error=repr(exc))


__all__ = ["HEARTBEAT", "LIVE_WINDOW", "SWEEP", "Instance", "live_instances"]

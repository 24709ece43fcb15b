"""Lazy records (a call's outcome, written after its answer left): durable, but never an fsync of their own
when an urgent record is about to commit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from tether.audit.log import AuditLog
from tether.audit.model import Event
from tether.audit.query import query
from tether.audit.verify import verify
from tether.store.db import Database


@contextmanager
def log_for(db_url: str, commits: list[int], lazy_window: float) -> Iterator[tuple[Database, AuditLog]]:
    """A writer over `db_url` that appends each commit's event count to `commits`; closed on exit."""
    db = Database(db_url)
    log = AuditLog(db, digest_key=b"k" * 32, on_commit=commits.append, lazy_window=lazy_window)
    try:
        yield db, log
    finally:
        log.close()
        db.dispose()


async def test_a_lazy_record_rides_in_the_next_urgent_commit(db_url: str) -> None:
    """Outcome then next decision: one commit holds both, in submission order, and both are durable."""
    commits: list[int] = []
    with log_for(db_url, commits, lazy_window=5.0) as (db, log):
        lazy = asyncio.ensure_future(log.record(Event(type="tool.completed", task_id="tsk_l"), lazy=True))
        await asyncio.sleep(0.05)  # the writer holds the lazy record, waiting for company
        assert not lazy.done()
        urgent = await log.record(Event(type="policy.decided", task_id="tsk_l"))
        done = await asyncio.wait_for(lazy, 1)
        log.close()  # joins the writer: its commit callbacks have run
        assert commits == [2]
        assert (done.seq, urgent.seq) == (1, 2)
        assert [e["type"] for e in query(db, task_id="tsk_l")[0]] == ["tool.completed", "policy.decided"]


async def test_a_lone_lazy_record_is_committed_after_the_window(db_url: str) -> None:
    """No urgent record comes: the lazy one is committed on its own once the window passes, and verifies."""
    commits: list[int] = []
    with log_for(db_url, commits, lazy_window=0.05) as (db, log):
        r = await asyncio.wait_for(log.record(Event(type="tool.completed", task_id="tsk_m"), lazy=True), 5)
        log.close()
        assert commits == [1]
        assert r.seq == 1
        assert verify(db, None).ok


async def test_urgent_records_never_wait_for_the_lazy_window(db_url: str) -> None:
    """An urgent record alone commits at once: a 30 s lazy window does not hold it."""
    commits: list[int] = []
    with log_for(db_url, commits, lazy_window=30.0) as (_db, log):
        await asyncio.wait_for(log.record(Event(type="policy.decided", task_id="tsk_u")), 10)
        log.close()
        assert commits == [1]

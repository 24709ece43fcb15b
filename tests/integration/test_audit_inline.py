"""Records of an event loop are committed on the loop when the write lock is free, in one transaction per
turn of the loop; when another writer holds the lock they go to the writer thread and the loop keeps serving."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tether.audit.log import AuditLog
from tether.audit.model import Event, Receipt
from tether.audit.query import query
from tether.audit.verify import verify
from tether.store.db import Database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


def _db(url: str) -> Database:
    from tether.store.migrate import upgrade

    upgrade(url)
    return Database(url)


async def _record_while_held(
    log: AuditLog, let_go: Callable[[], None], task_id: str, timeout: float
) -> tuple[Receipt, int, bool]:
    """Record one event while another writer holds a lock that `let_go` releases 0.4 s later (from a thread).

    Returns the receipt, how often a ticker task ran on the loop meanwhile, and whether the lock had been
    let go when the record returned.
    """
    released = threading.Event()

    def release_later() -> None:
        time.sleep(0.4)
        let_go()
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not released.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    tick = asyncio.ensure_future(ticker())
    receipt = await asyncio.wait_for(log.record(Event(type="policy.decided", task_id=task_id)), timeout)
    was_released = released.is_set()
    await tick
    return receipt, ticks, was_released


async def test_records_of_one_turn_of_the_loop_share_one_commit(sqlite_url: str) -> None:
    db = _db(sqlite_url)
    commits: list[int] = []
    log = AuditLog(db, digest_key=b"k" * 32, on_commit=commits.append)
    try:
        receipts = await asyncio.gather(
            *(log.record(Event(type="policy.decided", task_id=f"tsk_{i}")) for i in range(20))
        )
        assert commits == [20]  # one transaction, one fsync, for the twenty calls that decided in this turn
        assert sorted(r.seq for r in receipts) == list(range(1, 21))
        assert verify(db, None).ok
    finally:
        await log.stop()
        db.dispose()


async def test_a_writer_holding_the_lock_never_blocks_the_loop(sqlite_url: str) -> None:
    """Another process holds the write lock: the record waits on the writer thread, the loop runs on."""
    db = _db(sqlite_url)
    log = AuditLog(db, digest_key=b"k" * 32)
    assert db.writer_lock is not None
    other = os.open(db.writer_lock.path, os.O_RDWR | os.O_CREAT, 0o600)  # another process's handle on the lock
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        receipt, ticks, released = await _record_while_held(log, lambda: fcntl.flock(other, fcntl.LOCK_UN), "tsk_w", 10)
        assert released  # it was committed only once the other writer let go
        assert ticks >= 10  # …and the loop served others meanwhile
        assert receipt.seq == 1
        assert [e["type"] for e in query(db, task_id="tsk_w")[0]] == ["policy.decided"]
    finally:
        os.close(other)
        await log.stop()
        db.dispose()


async def test_stopping_commits_records_still_held_for_company(sqlite_url: str) -> None:
    db = _db(sqlite_url)
    log = AuditLog(db, digest_key=b"k" * 32, lazy_window=30.0)
    try:
        lazy = asyncio.ensure_future(log.record(Event(type="tool.completed", task_id="tsk_s"), lazy=True))
        await asyncio.sleep(0.05)
        assert not lazy.done()  # held: no urgent record came to ride with
        await log.stop()
        receipt = await asyncio.wait_for(lazy, 5)
        assert receipt.seq == 1
        assert [e["type"] for e in query(db, task_id="tsk_s")[0]] == ["tool.completed"]
    finally:
        db.dispose()


async def test_a_lock_held_outside_tether_never_blocks_the_loop(sqlite_url: str) -> None:
    """A `sqlite3` shell (no writer lock) holds SQLite's write lock: the loop does not wait on it."""
    import sqlite3

    db = _db(sqlite_url)
    assert db.ping()  # the server's connections have switched the file to WAL, as they have once it runs
    log = AuditLog(db, digest_key=b"k" * 32)
    shell = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
    shell.execute("BEGIN IMMEDIATE")  # held, the way an operator's open write transaction would be
    try:
        receipt, ticks, released = await _record_while_held(log, lambda: shell.execute("COMMIT"), "tsk_x", 20)
        assert released
        assert ticks >= 10
        assert receipt.seq == 1
        assert verify(db, None).ok
    finally:
        shell.close()
        await log.stop()
        db.dispose()
